"""The bootstrap of the headline figures: every resample at once from counts, against resample by resample.

``python -m benchmarks.intervals`` times
:func:`ultrasound_transfer.evaluation.intervals.headline_with_intervals` (two
classifiers, two classes: its resamples computed together as counts per
image, :mod:`ultrasound_transfer.evaluation.weighted_figures`) against the
same intervals computed resample by resample from the resampled images (what
``evaluate`` did before), on synthetic pooled predictions of the demo's size
and of BUSI's, with one and three repeats, at the default 2,000 resamples.
The two are timed in turn over ``--rounds`` rounds (3), the least kept; each
row also gives the largest difference between the two ways' interval ends
and the counted way's peak of traced memory.  Writes
``benchmarks/results/intervals.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from benchmarks.results import markdown_table, write_results
from ultrasound_transfer.evaluation.intervals import (
    COUNTS,
    PooledPredictions,
    averaged_over_repeats,
    bootstrap_figures,
    headline_with_intervals,
)

# (label, images, images per group, repeats): the demo's phantom (4 views a patient), BUSI (no patient ids:
# one image a group) at one repeat and at the paper protocol's three.
SIZES = [("demo (phantom)", 126, 4, 1), ("BUSI", 780, 1, 1), ("BUSI, 3 repeats", 780, 1, 3)]
RESAMPLES, BINS, LEVEL, SEED = 2000, 10, 0.95, 42


def pooled_predictions(images: int, per_group: int, repeats: int, seed: int = 0) -> dict[str, PooledPredictions]:
    """Two classifiers' out-of-fold predictions: patients of ``per_group`` images, a third malignant."""
    rng = np.random.default_rng(seed)
    groups = np.arange(images) // per_group
    labels = (rng.random(groups.max() + 1) < 1 / 3)[groups].astype(int)
    result = {}
    for name, noise in (("dense", 0.35), ("svm", 0.25)):
        probability = np.concatenate([1 / (1 + np.exp(-(2 * labels - 1 + noise * 4 * rng.normal(size=images))))
                                      for _ in range(repeats)])
        result[name] = PooledPredictions(
            labels=np.tile(labels, repeats), probabilities=np.column_stack([1 - probability, probability]),
            thresholds=np.full(images * repeats, 0.5), repeats=np.repeat(np.arange(repeats), images),
            groups=np.tile(groups, repeats))
    return result


def resample_by_resample(by_classifier: dict[str, PooledPredictions]) -> dict[str, tuple[float, float]]:
    """The intervals from each resample's images, one resample at a time."""
    names = list(by_classifier)

    def figures(rows: np.ndarray) -> dict[str, float]:
        per = {name: averaged_over_repeats(p, rows, BINS) for name, p in by_classifier.items()}
        flat = {f"{name}.{k}": v for name, values in per.items() for k, v in values.items()}
        return flat | {f"difference.{k}": per[names[1]][k] - per[names[0]][k] for k in per[names[1]]
                       if k not in COUNTS}

    return bootstrap_figures(figures, by_classifier[names[0]].groups, resamples=RESAMPLES, level=LEVEL, seed=SEED)


def from_counts(by_classifier: dict[str, PooledPredictions]) -> dict[str, dict[str, float]]:
    return headline_with_intervals(by_classifier, calibration_bins=BINS, resamples=RESAMPLES, level=LEVEL, seed=SEED)


def largest_difference(counted: dict[str, dict[str, float]], resampled: dict[str, tuple[float, float]]) -> float:
    """The largest absolute difference between the two ways' interval ends (NaN ends must agree)."""
    largest = 0.0
    for key, ends in resampled.items():
        owner, name = key.split(".")
        if name in COUNTS:
            continue
        section = counted["svm_minus_dense" if owner == "difference" else owner]
        for end, value in zip(("low", "high"), ends):
            other = section[f"{name}_ci_{end}"]
            if np.isnan(value) != np.isnan(other):
                raise AssertionError(f"{key} {end}: {value} against {other}")
            if not np.isnan(value):
                largest = max(largest, abs(value - other))
    return largest


def seconds(run, *args) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the two ways in turn (at least 1)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give at least 1.")
    rows, data = [], []
    for label, images, per_group, repeats in SIZES:
        pooled = pooled_predictions(images, per_group, repeats)
        counted_s, resampled_s = [], []
        for round_number in range(args.rounds):
            pair = [(counted_s, from_counts), (resampled_s, resample_by_resample)]
            for times, run in pair if round_number % 2 == 0 else pair[::-1]:
                times.append(seconds(run, pooled))
        difference = largest_difference(from_counts(pooled), resample_by_resample(pooled))
        tracemalloc.start()
        from_counts(pooled)
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        best_counted, best_resampled = min(counted_s), min(resampled_s)
        data.append({"size": label, "images": images, "images_per_group": per_group, "repeats": repeats,
                     "resamples": RESAMPLES, "counted_s": counted_s, "resampled_s": resampled_s,
                     "largest_difference": difference, "counted_peak_traced_mb": peak_mb})
        rows.append([label, f"{images * repeats:,}", f"{best_resampled:.2f}", f"{best_counted:.2f}",
                     f"{best_resampled / best_counted:.1f}×", f"{difference:.1e}", f"{peak_mb:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
    headers = ["predictions", "rows (images × repeats)", "resample by resample, s", "all at once from counts, s",
               "speed-up", "largest difference of an interval end", "peak traced memory, MB"]
    note = (f"Two classifiers' intervals of every two-class headline figure and of their difference, "
            f"{RESAMPLES:,} group resamples, {args.rounds} round(s) with the two ways in turn, the least time kept.")
    write_results("intervals", data, {"table": markdown_table(rows, headers)}, note=note)


if __name__ == "__main__":
    main()
