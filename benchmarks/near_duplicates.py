"""Near-duplicate detection: how well the threshold separates, and how fast grouping is.

``python -m benchmarks.near_duplicates`` prints

1. distances (bits of 128) between phantom frames and their near-copies (text
   line, caliper cross, 5 % crop, gain change, JPEG, text + JPEG), against the
   distances between frames of different patients: the evidence behind the
   default ``normalize.near_duplicate_bits``;
2. the time to find the near-duplicate pairs of 10,000 images and join them
   into groups, and, side by side on 1,000 images, the vectorised search
   against a plain Python double loop.

Results are written to ``benchmarks/results/near_duplicates.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from tests.data.test_near_duplicates import COPIES
from ultrasound_transfer.data.grouping import merge_groups
from ultrasound_transfer.data.near_duplicates import N_VARIANTS, fingerprints, near_pairs
from ultrasound_transfer.data.phantom import generate
from ultrasound_transfer.settings import PhantomSettings

THRESHOLD = 18
RESULTS = Path("benchmarks/results/near_duplicates.json")


def distance(a: np.ndarray, b: np.ndarray) -> int:
    """Distance of two images from their fingerprints (N_VARIANTS, 2), both ways."""
    def one_way(x, y):
        return int(min(np.bitwise_count(x[k] ^ y[0]).sum() for k in range(N_VARIANTS)))
    return min(one_way(a, b), one_way(b, a))


def separation(n_frames: int = 200) -> dict:
    """Copy-to-original distances per kind of copy, and different-patient distances."""
    images = generate(PhantomSettings(count=n_frames, images_per_patient=1, native_size=128, seed=101))
    prints = np.stack([fingerprints(im.pixels) for im in images])
    copies = {name: [distance(prints[i], fingerprints(make(images[i].pixels))) for i in range(60)]
              for name, make in {**COPIES, "text+jpeg": lambda g: COPIES["jpeg"](COPIES["text"](g))}.items()}
    pairs, distances = near_pairs(prints, 128)
    return {
        "copies_max_bits": {k: int(max(v)) for k, v in copies.items()},
        "copies_p95_bits": {k: float(np.percentile(v, 95)) for k, v in copies.items()},
        "different_patients_min_bits": int(distances.min()),
        "different_patients_p1_bits": float(np.percentile(distances, 1)),
        "different_patient_pairs": int(len(pairs)),
    }


def synthetic_prints(n: int, seed: int = 0) -> np.ndarray:
    """Random fingerprints with 5 % planted near-copies (a few bits flipped)."""
    rng = np.random.default_rng(seed)
    prints = rng.integers(0, 2**63, (n, N_VARIANTS, 2), dtype=np.uint64)
    copies = rng.choice(n, n // 20, replace=False)
    sources = rng.integers(0, n, len(copies))
    prints[copies] = prints[sources] ^ np.uint64(0b10110)
    return prints


def naive_pairs(prints: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    """The obvious double loop, for comparison."""
    found = set()
    for i in range(len(prints)):
        for j in range(i + 1, len(prints)):
            if distance(prints[i], prints[j]) <= threshold:
                found.add((i, j))
    return found


def main() -> None:
    sep = separation()
    print("distance in bits (of 128) between a frame and its copy, max over 60 frames:")
    for name, bits in sep["copies_max_bits"].items():
        print(f"  {name:10s} {bits:3d}   (95th percentile {sep['copies_p95_bits'][name]:.0f})")
    print(f"different patients: min {sep['different_patients_min_bits']}, "
          f"1st percentile {sep['different_patients_p1_bits']:.0f} bits; threshold {THRESHOLD}")

    small = synthetic_prints(1000, seed=1)
    start = time.perf_counter()
    slow = naive_pairs(small[:300], THRESHOLD)
    naive_s = (time.perf_counter() - start) * (1000 * 999) / (300 * 299)   # extrapolated to 1,000 images
    start = time.perf_counter()
    fast, _ = near_pairs(small, THRESHOLD)
    fast_s = time.perf_counter() - start
    assert {tuple(p) for p in near_pairs(small[:300], THRESHOLD)[0].tolist()} == slow

    big = synthetic_prints(10_000)
    start = time.perf_counter()
    pairs, _ = near_pairs(big, THRESHOLD)
    groups = merge_groups([f"c{i}" for i in range(len(big))], [str(i) for i in range(len(big))], pairs)
    big_s = time.perf_counter() - start
    print(f"1,000 images: naive loop {naive_s:.1f} s (extrapolated from 300), vectorised {fast_s:.3f} s, "
          f"ratio {naive_s / fast_s:.0f}x")
    print(f"10,000 images: {len(pairs)} pairs, {len(set(groups))} groups in {big_s:.2f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"threshold_bits": THRESHOLD, **sep, "naive_1000_s": naive_s,
                                   "vectorised_1000_s": fast_s, "speedup": naive_s / fast_s,
                                   "grouping_10000_s": big_s, "pairs_10000": int(len(pairs))}, indent=2) + "\n")


if __name__ == "__main__":
    main()
