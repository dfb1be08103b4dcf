"""From a scanned raw folder to the prepared dataset: decoded images, exclusions and the manifest.

Images are decoded to gray, fitted to the square (``normalize.resize``) and
fingerprinted, and what the shortcut audit reads of each is recorded: its
native size, the share of the square that is padding, its mean gray level and
the share of bright pixels in the part of the frame the square keeps
(burned-in text and calipers are drawn white).  Identical pixels
under different labels cannot both be right, and near-duplicates under
different labels are suspect: both are found here so the stage can leave them
out and report them.  The manifest numbers classes in sorted order of their
names (``benign`` 0, ``malignant`` 1, the positive class) and joins groups over
cases, identical pixels and near-duplicates (:mod:`ultrasound_transfer.data.grouping`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ultrasound_transfer.common import PipelineError, Progress, log
from ultrasound_transfer.data.grouping import merge_groups
from ultrasound_transfer.data.frames import coloured_frame, coloured_frames
from ultrasound_transfer.data.imaging import fit_square, kept_region, pixel_sha256
from ultrasound_transfer.data.near_duplicates import N_VARIANTS, fingerprints
from ultrasound_transfer.choices import OFFICIAL_FOLD_COLUMN


# A native pixel at least this bright counts as overlay-like (text, calipers, markers are drawn white).
BRIGHT_LEVEL = 250


def image_name(row: dict) -> str:
    """An image's name within its raw folder: its file's path, and ``#<k>`` for frame k of a multi-frame file."""
    return f"{row['path']}#{row['frame']}" if row.get("frame") else row["path"]


class FrameReader:
    """The frames rows ask for, each file opened once: a multi-frame file's frames are listed in order, so its
    frames are read one after another from one open file (a cine loop is never decoded from the start again).
    Past a frame the decoder failed on, a file's later frames are read one by one, by their index."""

    def __init__(self, raw_dir: Path) -> None:
        self.raw_dir, self.path, self.frames, self.position = raw_dir, None, iter(()), 0
        self.read_alone: set[Path] = set()          # files whose sequential reading failed partway

    def read(self, row: dict) -> tuple[np.ndarray, float]:
        """The gray frame of ``row`` and its share of colour; a :class:`PipelineError` naming the file if not."""
        path, wanted = self.raw_dir / row["path"], row.get("frame") or 1
        if not path.exists():
            raise PipelineError(f"{self.raw_dir}: the listed image {row['path']} does not exist at {path}.")
        try:
            if path in self.read_alone:
                return coloured_frame(path, wanted)
            return self.next_in_order(path, wanted)
        except OSError as error:
            raise PipelineError(f"{path}: cannot be read ({error.strerror or error}); copy it again, or remove "
                                "it.") from None

    def next_in_order(self, path: Path, wanted: int) -> tuple[np.ndarray, float]:
        if path != self.path or wanted <= self.position:
            self.path, self.position = None, 0          # set again once the file has opened
            self.frames = coloured_frames(path)
            self.path = path
        try:
            while self.position < wanted:
                frame = next(self.frames)
                self.position += 1
        except StopIteration:
            self.path = None
            raise PipelineError(f"{path}: frame {wanted} is listed but the file holds {self.position}.") from None
        except PipelineError:
            self.path = None
            self.read_alone.add(path)       # its later frames are read alone, not after this one again
            raise
        return frame


def decode_all(
    raw_dir: Path, rows: list[dict], size: int, on_undecodable: str, resize: str = "letterbox"
) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict]]:
    """Decode every listed image (a frame of a multi-frame file where the row says so), fit it to the square by
    ``resize``, and fingerprint it.

    Returns the stack, the fingerprints (N, variants, 2), the rows kept (with
    sha256, native size, padding share, mean gray and bright share added) and
    the files left out.  An undecodable file
    is an error, or with ``on_undecodable='skip'`` left out and reported.
    """
    stack, prints, kept, excluded = [], [], [], []
    progress = Progress(len(rows), "images")
    reader = FrameReader(raw_dir)
    for row in rows:
        if progress.due():
            log("normalize", f"{raw_dir.name}: decoded {progress}")
        progress.done()
        try:
            image, coloured = reader.read(row)
        except PipelineError as problem:
            if on_undecodable != "skip" or not (raw_dir / row["path"]).exists():
                raise PipelineError(f"{problem} (or set normalize.on_undecodable: skip to leave such files "
                                    "out)") from None
            excluded.append({"path": image_name(row), "reason": "undecodable or degenerate image"})
            continue
        square, padding = fit_square(image, size, resize)
        stack.append(square)
        prints.append(fingerprints(image))
        kept.append({**row, "sha256": pixel_sha256(image), "height": image.shape[0], "width": image.shape[1],
                     "padding_share": padding, "mean_gray": float(square.mean()),
                     "bright_share": float(np.mean(kept_region(image, resize) >= BRIGHT_LEVEL)),
                     "colour_share": coloured})
    if not stack:
        return np.zeros((0, size, size), np.uint8), np.zeros((0, N_VARIANTS, 2), np.uint64), kept, excluded
    return np.stack(stack), np.stack(prints), kept, excluded


def conflicting_duplicates(rows: list[dict]) -> list[dict]:
    """Sets of identical pixels filed under more than one label."""
    by_hash: dict[str, list[dict]] = {}
    for row in rows:
        by_hash.setdefault(row["sha256"], []).append(row)
    return [
        {"sha256": h, "files": [image_name(r) for r in group], "labels": sorted({r["label"] for r in group})}
        for h, group in by_hash.items()
        if len({r["label"] for r in group}) > 1
    ]


def cross_label_near_duplicates(rows: list[dict], pairs: np.ndarray, distances: np.ndarray) -> list[dict]:
    """Near-duplicate pairs filed under different labels, closest first."""
    found = [
        {"files": [image_name(rows[i]), image_name(rows[j])], "labels": [rows[i]["label"], rows[j]["label"]],
         "distance": int(d)}
        for (i, j), d in zip(pairs, distances)
        if rows[i]["label"] != rows[j]["label"]
    ]
    return sorted(found, key=lambda pair: pair["distance"])


# Columns beside the native size that the shortcut audit reads (ultrasound_transfer.evaluation.shortcuts).
AUDITED_COLUMNS = ("padding_share", "mean_gray", "bright_share", "colour_share")


def build_manifest(dataset: str, rows: list[dict], near: np.ndarray) -> pd.DataFrame:
    """The manifest of the kept images, with groups joined over patients (cases where a dataset names no
    patients), identical pixels and (column ``group``) the near-duplicate pairs ``near``.  ``source`` is the
    image's name in the raw folder (:func:`image_name`)."""
    table = pd.DataFrame(rows)
    classes = sorted(table["label"].unique())
    names = [image_name(row) for row in rows]
    # The patient where the dataset names one; else the case (a multi-frame file's frames); else the image alone.
    patients = [row.get("patient") or row["case"] or f"image:{name}" for row, name in zip(rows, names)]
    return pd.DataFrame(
        {
            "id": [f"{dataset}/{name}" for name in names],
            "source": names,
            "label": [classes.index(c) for c in table["label"]],
            "class_name": table["label"],
            "group": merge_groups(patients, list(table["sha256"]), near),
            "group_exact": merge_groups(patients, list(table["sha256"])),
            "case": table["case"],
            "sha256": table["sha256"],
            "height": table["height"],
            "width": table["width"],
            **{column: table[column] for column in AUDITED_COLUMNS if column in table},
            # A dataset's official partitions (each image's test fold), where it publishes them (cv.folds: official).
            **{column: table[column].astype("Int64") for column in table.columns
               if column.startswith(OFFICIAL_FOLD_COLUMN.format(""))},
        }
    )


def reindex_pairs(pairs: np.ndarray, distances: np.ndarray, keep: list[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs among the kept rows (of ``n``), renumbered to their new positions."""
    position = np.full(n, -1)
    position[keep] = np.arange(len(keep))
    mapped = position[pairs.reshape(-1, 2)]
    both = (mapped >= 0).all(axis=1)
    return mapped[both], distances[both]
