"""The bootstrap of the headline figures and of the external gap: every resample at once from counts, against
resample by resample.

``python -m benchmarks.intervals`` times
:func:`ultrasound_transfer.evaluation.intervals.counted_intervals` (what
``evaluate`` and ``external`` compute: two classifiers' resamples together as
counts per image, :mod:`ultrasound_transfer.evaluation.weighted_figures`)
against :func:`~ultrasound_transfer.evaluation.intervals.resampled_intervals`
(the same intervals resample by resample from the resampled images, what
``evaluate`` did before), on synthetic pooled predictions of the demo's size
and of BUSI's, two classes with one and three repeats and three classes
(BUSI with ``normal``); and ``external``'s split-by-split gap
(:func:`~ultrasound_transfer.evaluation.external_validation.split_by_split_gap`
against :func:`~ultrasound_transfer.evaluation.external_validation.resampled_gap_intervals`)
of BUSI's 15 splits read on a target of BUS-BRA's size; all at the default
2,000 resamples.  The two ways are timed in turn over ``--rounds`` rounds
(3), the least kept; each row also gives the largest difference between the
two ways' interval ends and the counted way's peak of traced memory.  Writes
``benchmarks/results/intervals.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Callable

import numpy as np

from benchmarks.results import markdown_table, write_results
from ultrasound_transfer.evaluation.external_validation import (
    GAP_FIGURES,
    resampled_gap_intervals,
    split_by_split_gap,
)
from ultrasound_transfer.evaluation.intervals import PooledPredictions, counted_intervals, resampled_intervals

# (label, images, images per group, repeats, classes): the demo's phantom (4 views a patient), BUSI (no patient
# ids: one image a group) at one repeat and at the paper protocol's three, and BUSI with its normal images.
SIZES = [("demo (phantom)", 126, 4, 1, 2), ("BUSI", 780, 1, 1, 2), ("BUSI, 3 repeats", 780, 1, 3, 2),
         ("BUSI, 3 classes", 780, 1, 1, 3)]
# The external gap: BUSI's 3 x 5 splits, each read on a target of BUS-BRA's size (1,875 images of 1,064 patients).
GAP_SOURCE, GAP_SPLITS, GAP_TARGET, GAP_TARGET_PATIENTS = 780, 15, 1875, 1064
RESAMPLES, BINS, LEVEL, SEED = 2000, 10, 0.95, 42
OPTIONS = dict(calibration_bins=BINS, resamples=RESAMPLES, level=LEVEL, seed=SEED)


def pooled_predictions(images: int, per_group: int, repeats: int, classes: int = 2, seed: int = 0
                       ) -> dict[str, PooledPredictions]:
    """Two classifiers' out-of-fold predictions: patients of ``per_group`` images, a third malignant (two
    classes), or BUSI's shares of benign, malignant and normal (three)."""
    rng = np.random.default_rng(seed)
    groups = np.arange(images) // per_group
    shares = [2 / 3, 1 / 3] if classes == 2 else [437 / 780, 210 / 780, 133 / 780]
    labels = rng.choice(classes, groups.max() + 1, p=shares)[groups]
    result = {}
    for name, noise in (("dense", 0.35), ("svm", 0.25)):
        scores = np.concatenate([2 * np.eye(classes)[labels] + noise * 4 * rng.normal(size=(images, classes))
                                 for _ in range(repeats)])
        probabilities = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
        result[name] = PooledPredictions(
            labels=np.tile(labels, repeats), probabilities=probabilities, thresholds=np.full(images * repeats, 0.5),
            repeats=np.repeat(np.arange(repeats), images), groups=np.tile(groups, repeats))
    return result


def gap_predictions(seed: int = 0) -> tuple[PooledPredictions, np.ndarray, list[PooledPredictions]]:
    """The source's pooled predictions with each row's split (5 folds x 3 repeats), and each split's reading
    of every target image."""
    rng = np.random.default_rng(seed)
    source = pooled_predictions(GAP_SOURCE, 1, GAP_SPLITS // 5, seed=seed)["svm"]
    splits = 5 * source.repeats + rng.integers(0, 5, len(source.labels)) + 1
    target_groups = np.sort(rng.integers(0, GAP_TARGET_PATIENTS, GAP_TARGET))
    target_labels = (rng.random(GAP_TARGET_PATIENTS) < 0.35)[target_groups].astype(int)
    readings = []
    for _ in range(GAP_SPLITS):
        malignant = 1 / (1 + np.exp(-(1.5 * (2 * target_labels - 1) + 1.6 * rng.normal(size=GAP_TARGET))))
        readings.append(PooledPredictions(
            labels=target_labels, probabilities=np.column_stack([1 - malignant, malignant]),
            thresholds=np.full(GAP_TARGET, rng.uniform(0.4, 0.6)), repeats=np.ones(GAP_TARGET, int),
            groups=target_groups))
    return source, splits, readings


def largest_difference(counted: dict[str, tuple[float, float]], resampled: dict[str, tuple[float, float]]) -> float:
    """The largest absolute difference between the two ways' interval ends (NaN ends must agree)."""
    if set(counted) != set(resampled):
        raise AssertionError(f"the two ways give other figures: {sorted(set(counted) ^ set(resampled))}")
    largest = 0.0
    for key, ends in resampled.items():
        for end, value, other in zip(("low", "high"), ends, counted[key]):
            if np.isnan(value) != np.isnan(other):
                raise AssertionError(f"{key} {end}: {value} against {other}")
            if not np.isnan(value):
                largest = max(largest, abs(value - other))
    return largest


def gap_ends(gap: dict[str, float]) -> dict[str, tuple[float, float]]:
    """:func:`split_by_split_gap`'s interval ends, keyed as :func:`resampled_gap_intervals` keys them."""
    return {f: (gap[f"external_minus_internal_{f}_ci_low"], gap[f"external_minus_internal_{f}_ci_high"])
            for f in GAP_FIGURES}


def cases() -> list[tuple[str, int, Callable[[], dict], Callable[[], dict], dict]]:
    """(label, rows, the counted way, the resample-by-resample way, facts) of each row of the table."""
    result = []
    for label, images, per_group, repeats, classes in SIZES:
        pooled = pooled_predictions(images, per_group, repeats, classes)
        result.append((label, images * repeats, lambda p=pooled: counted_intervals(p, **OPTIONS),
                       lambda p=pooled: resampled_intervals(p, **OPTIONS),
                       {"images": images, "images_per_group": per_group, "repeats": repeats, "classes": classes}))
    source, splits, readings = gap_predictions()
    result.append((f"external gap: BUSI, 3 repeats -> {GAP_TARGET:,} images x {GAP_SPLITS} splits",
                   len(source.labels) + GAP_TARGET * GAP_SPLITS,
                   lambda: gap_ends(split_by_split_gap(source, splits, readings, **OPTIONS)),
                   lambda: resampled_gap_intervals(source, splits, readings, **OPTIONS),
                   {"source_images": GAP_SOURCE, "splits": GAP_SPLITS, "target_images": GAP_TARGET,
                    "target_patients": GAP_TARGET_PATIENTS}))
    return result


def seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the two ways in turn (at least 1)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give at least 1.")
    rows, data = [], []
    for label, row_count, counted, resampled, facts in cases():
        counted_s, resampled_s = [], []
        for round_number in range(args.rounds):
            pair = [(counted_s, counted), (resampled_s, resampled)]
            for times, run in pair if round_number % 2 == 0 else pair[::-1]:
                times.append(seconds(run))
        difference = largest_difference(counted(), resampled())
        tracemalloc.start()
        counted()
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        best_counted, best_resampled = min(counted_s), min(resampled_s)
        data.append({"size": label, "rows": row_count, **facts, "resamples": RESAMPLES, "counted_s": counted_s,
                     "resampled_s": resampled_s, "largest_difference": difference,
                     "counted_peak_traced_mb": peak_mb})
        rows.append([label, f"{row_count:,}", f"{best_resampled:.2f}", f"{best_counted:.2f}",
                     f"{best_resampled / best_counted:.1f}×", f"{difference:.1e}", f"{peak_mb:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
    headers = ["predictions", "rows", "resample by resample, s", "all at once from counts, s", "speed-up",
               "largest difference of an interval end", "peak traced memory, MB"]
    note = (f"Two classifiers' intervals of every headline figure and of their difference (rows: images × "
            f"repeats); the external gap's intervals of {len(GAP_FIGURES)} figures (rows: the source's predictions "
            f"and every split's reading of the target). {RESAMPLES:,} group resamples, {args.rounds} round(s) with "
            "the two ways in turn, the least time kept.")
    write_results("intervals", data, {"table": markdown_table(rows, headers)}, note=note)


if __name__ == "__main__":
    main()
