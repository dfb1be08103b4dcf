"""Perceptual fingerprints and near-duplicate pairs of ultrasound images.

Public ultrasound sets hold near-copies of one frame: saved with and without
calipers or text, re-cropped, re-encoded.  Exact pixel hashes miss them; if two
near-copies fall on both sides of a fold, cross-validation scores memory.

Fingerprint: 128 bits per image, a DCT hash (64 bits: the signs of the 8x8
lowest frequencies of a 32x32 thumbnail against their median) followed by a
difference hash (64 bits: left-right brightness steps of a 9x8 thumbnail).
Both ignore gain (global scaling and offset), JPEG noise and most small
overlays; neither survives a crop well, so each image is also fingerprinted
under nine 5 % crops (both sides, each side, each corner).  The distance of two
images is the smallest Hamming distance between one image's crops and the
other's full fingerprint, taken both ways.

Pairs at most ``threshold`` bits apart are near-duplicates.  The default (18 of
128) comes from a measurement (docs/datasets.md, "Near-duplicates and grouped folds";
``python -m benchmarks.near_duplicates``, 60 phantom frames): copies with a
text line or text plus JPEG stay within 13 bits, caliper crosses 9, gain
changes and JPEG re-encoding 3, 5 % crops 0 (the fingerprinted crops) or 16
(an uneven crop off those), while different phantom patients are at least
22 bits apart (1st percentile 33).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

CROP_FRACTION = 0.05
N_VARIANTS = 10       # the image itself and nine crops
WORDS = 2             # 128 bits as two uint64 words


def _pack(bits: np.ndarray) -> np.ndarray:
    """128 booleans -> two uint64 words."""
    return np.packbits(bits.astype(np.uint8)).view(">u8").astype(np.uint64)


def fingerprint(gray: np.ndarray) -> np.ndarray:
    """128-bit perceptual fingerprint (two uint64 words) of a gray image."""
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    dct = cv2.dct(small)[:8, :8].ravel()
    dct_bits = dct > np.median(dct[1:])            # the DC term would dominate the median
    thumb = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.float32)
    diff_bits = (thumb[:, 1:] > thumb[:, :-1]).ravel()
    return _pack(np.concatenate([dct_bits, diff_bits]))


def crop_variants(gray: np.ndarray, fraction: float = CROP_FRACTION) -> list[np.ndarray]:
    """The image and nine crops removing ``fraction`` of its height/width."""
    h, w = gray.shape
    dy, dx = max(1, round(fraction * h)), max(1, round(fraction * w))
    return [
        gray,
        gray[dy // 2 : h - dy // 2, dx // 2 : w - dx // 2],
        gray[dy:, :], gray[: h - dy, :], gray[:, dx:], gray[:, : w - dx],
        gray[dy:, dx:], gray[dy:, : w - dx], gray[: h - dy, dx:], gray[: h - dy, : w - dx],
    ]


def fingerprints(gray: np.ndarray) -> np.ndarray:
    """Fingerprints of the image and its crops, shape (N_VARIANTS, 2); row 0 is the image."""
    return np.stack([fingerprint(v) for v in crop_variants(gray)])


def _block_distances(variants: np.ndarray, full: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Smallest distance from any crop of images start..stop-1 to every image's full print."""
    block = variants[start:stop]                                   # (B, K, 2)
    best = np.full((stop - start, len(full)), 255, dtype=np.uint8)
    for k in range(block.shape[1]):
        d = np.bitwise_count(block[:, k, None, 0] ^ full[None, :, 0]).astype(np.uint8)
        d += np.bitwise_count(block[:, k, None, 1] ^ full[None, :, 1])
        np.minimum(best, d, out=best)
    return best


def near_pairs(prints: np.ndarray, threshold: int, block: int = 512, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) whose distance is at most ``threshold``, and their distances.

    ``prints`` has shape (N, N_VARIANTS, 2), from :func:`fingerprints`.  The
    comparison is vectorised over blocks of rows and spread over ``workers``
    threads (NumPy releases the GIL), so 10,000 images take seconds.
    """
    n = len(prints)
    full = np.ascontiguousarray(prints[:, 0])

    def pairs_in(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stop = min(start + block, n)
        d = _block_distances(prints, full, start, stop)
        rows, cols = np.nonzero(d <= threshold)
        rows = rows + start
        keep = rows != cols
        return rows[keep], cols[keep], d[rows[keep] - start, cols[keep]]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(pairs_in, range(0, n, block)))
    if not parts:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.uint8)
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    dist = np.concatenate([p[2] for p in parts])
    # Each direction was measured separately: keep the smaller distance per unordered pair.
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    order = np.lexsort((dist, hi, lo))
    lo, hi, dist = lo[order], hi[order], dist[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return np.stack([lo[first], hi[first]], axis=1), dist[first]


def contact_sheet(images: list[np.ndarray], captions: list[str], size: int = 96) -> np.ndarray:
    """Pairs of images side by side, one pair per row, each row captioned."""
    rows = []
    for (a, b), caption in zip(images, captions):
        tiles = []
        for image in (a, b):
            scale = size / max(image.shape)
            resized = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                                 interpolation=cv2.INTER_AREA)
            tile = np.zeros((size, size), np.uint8)
            tile[: resized.shape[0], : resized.shape[1]] = resized
            tiles.append(tile)
        text = np.zeros((size, 3 * size), np.uint8)
        for line, piece in enumerate(caption.split("\n")):
            cv2.putText(text, piece[:48], (4, 16 + 16 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
        rows.append(np.hstack([tiles[0], np.full((size, 4), 128, np.uint8), tiles[1], text]))
    if not rows:
        blank = np.zeros((24, 5 * size), np.uint8)
        cv2.putText(blank, "no pairs", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
        return blank
    return np.vstack(rows)
