"""Headline figures on the pooled out-of-fold predictions, with intervals from a bootstrap over groups.

Every image is a test image once per repeat of the cross-validation, so the
test folds of one repeat together hold one prediction per image.  A headline
figure is computed on those pooled predictions, per repeat, and averaged over
the repeats; each image is read at its own fold's operating point.

Its interval is a percentile bootstrap (Efron & Tibshirani, An Introduction to
the Bootstrap, 1993, ch. 13) that resamples *groups*, never images: a group is
a patient or case, joined with its identical and near-duplicate images
(``normalize``'s ``group``), so that views of one lesion, which are not
independent, come and go together (the cluster bootstrap; Field & Welsh,
JRSS B 69, 2007).  One resample of groups serves every classifier and
repeat, so the intervals of a difference between classifiers are paired.  It
is seeded: the same predictions and seed give the same interval.  Each
resample's figures are computed from how often it draws each row, hundreds
of resamples at once (:func:`counted_intervals`,
:mod:`~ultrasound_transfer.evaluation.weighted_figures`); they equal the
figures of the resample's rows (:func:`resampled_intervals`, the definition).

The interval describes the uncertainty from which patients were sampled,
given the trained networks; it does not include the variation between
training runs, which the repeated folds and the corrected t-test address
(:mod:`ultrasound_transfer.evaluation.statistics`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import rankdata

from ultrasound_transfer.evaluation.calibration import (
    brier_score,
    calibration_intercept_slope,
    debiased_calibration_error,
    expected_calibration_error,
)
from ultrasound_transfer.evaluation.scoring import roc_auc, threshold_metrics
from ultrasound_transfer.evaluation.weighted_figures import weighted_headline, weighted_multiclass_headline
from ultrasound_transfer.settings import EvaluationSettings

# The headline figures of two classes, and which carry an interval.
BINARY_HEADLINE = ("roc_auc", "sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy",
                   "brier", "ece", "calibration_error_debiased", "calibration_intercept", "calibration_slope")
MULTICLASS_HEADLINE = ("roc_auc", "accuracy", "balanced_accuracy")
COUNTS = ("tp", "fp", "tn", "fn")


def binary_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic, ties counted half; NaN without both classes."""
    malignant = np.asarray(labels) == 1
    n_pos, n_neg = int(malignant.sum()), int((~malignant).sum())
    if not n_pos or not n_neg:
        return np.nan
    ranks = rankdata(scores)
    return float((ranks[malignant].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class PooledPredictions:
    """One classifier's out-of-fold predictions over all repeats: one row per (repeat, image) or (repeat, case)."""

    labels: np.ndarray          # (N,) int
    probabilities: np.ndarray   # (N, n_classes); column 1 is malignant for two classes
    thresholds: np.ndarray      # (N,) the operating point of the row's fold (two classes)
    repeats: np.ndarray         # (N,) the repeat each row comes from
    groups: np.ndarray          # (N,) the group resampled by the bootstrap

    def rows_of(self, repeat: int) -> np.ndarray:
        return np.flatnonzero(self.repeats == repeat)


def interval_options(evaluation: EvaluationSettings, *, seed: int) -> dict:
    """The keyword arguments of :func:`headline_with_intervals` that the ``evaluation`` params set."""
    return dict(calibration_bins=evaluation.calibration_bins, resamples=evaluation.bootstrap_resamples,
                level=evaluation.confidence_level, seed=seed)


def headline_of(pooled: PooledPredictions, rows: np.ndarray, calibration_bins: int) -> dict[str, float]:
    """The headline figures of ``rows`` (one repeat's pooled predictions, possibly resampled)."""
    labels, probabilities = pooled.labels[rows], pooled.probabilities[rows]
    n_classes = probabilities.shape[1]
    if n_classes > 2:
        predicted = probabilities.argmax(axis=1)
        recalls = [np.mean(predicted[labels == c] == c) for c in range(n_classes) if np.any(labels == c)]
        auc = roc_auc(labels, probabilities, n_classes) if len(np.unique(labels)) == n_classes else np.nan
        return {"roc_auc": auc, "accuracy": float(np.mean(predicted == labels)),
                "balanced_accuracy": float(np.mean(recalls))}
    malignant = probabilities[:, 1]
    result = threshold_metrics(labels, malignant, pooled.thresholds[rows])
    result["roc_auc"] = binary_auc(labels, malignant)
    result["brier"] = brier_score(labels, malignant)
    result["ece"] = expected_calibration_error(labels, malignant, calibration_bins)
    result["calibration_error_debiased"] = debiased_calibration_error(labels, malignant, calibration_bins)
    result["calibration_intercept"], result["calibration_slope"] = calibration_intercept_slope(labels, malignant)
    return result


def averaged_over_repeats(pooled: PooledPredictions, rows: np.ndarray, calibration_bins: int) -> dict[str, float]:
    """Each figure per repeat on that repeat's rows among ``rows``, averaged over the repeats."""
    repeats = np.unique(pooled.repeats)
    if len(repeats) == 1:
        return headline_of(pooled, rows, calibration_bins)
    per_repeat = [headline_of(pooled, rows[pooled.repeats[rows] == r], calibration_bins) for r in repeats]
    return {name: float(mean) for name, mean in mean_where_defined(per_repeat).items()}


def mean_where_defined(per_part: list[dict]) -> dict[str, np.ndarray]:
    """Each figure of ``per_part`` (the figures of each repeat or split, every part naming the same ones, each a
    number or an array of one per resample) averaged over the parts where it is defined, NaN where it is in
    none: a repeat or split whose rows lack a class leaves out the rates it cannot have."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)         # numpy's "mean of empty slice": NaN, as meant
        return {name: np.nanmean(np.stack([np.asarray(part[name], dtype=float) for part in per_part]), axis=0)
                for name in per_part[0]}


def drawn_groups(groups: np.ndarray, *, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The bootstrap's draws: each row's group (0..G-1), the groups' sizes, and per resample the G groups drawn
    with replacement.  One seeded stream, so that the rows and the weights below are the same resamples."""
    _, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    return inverse, sizes, [rng.integers(0, len(sizes), len(sizes)) for _ in range(resamples)]


def group_resamples(groups: np.ndarray, *, resamples: int, seed: int) -> list[np.ndarray]:
    """Row positions of each bootstrap resample: groups drawn with replacement, each with all its rows."""
    inverse, sizes, drawn_per_resample = drawn_groups(groups, resamples=resamples, seed=seed)
    order = np.argsort(inverse, kind="stable")          # rows grouped, group by group
    starts = np.cumsum(sizes) - sizes
    draws = []
    for drawn in drawn_per_resample:
        drawn_sizes = sizes[drawn]
        within = np.arange(drawn_sizes.sum()) - np.repeat(np.cumsum(drawn_sizes) - drawn_sizes, drawn_sizes)
        draws.append(order[np.repeat(starts[drawn], drawn_sizes) + within])
    return draws


def resample_weights(groups: np.ndarray, *, resamples: int, seed: int) -> np.ndarray:
    """(resamples, rows): how often each row is in each resample of :func:`group_resamples` (the same seed, the
    same resamples), as the weights :mod:`ultrasound_transfer.evaluation.weighted_figures` reads."""
    inverse, sizes, drawn_per_resample = drawn_groups(groups, resamples=resamples, seed=seed)
    return np.stack([np.bincount(drawn, minlength=len(sizes))[inverse] for drawn in drawn_per_resample])


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` share of the finite bootstrap values."""
    finite = samples[np.isfinite(samples)]
    if not len(finite):
        return np.nan, np.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_figures(statistics: Callable[[np.ndarray], dict[str, float]], groups: np.ndarray, *,
                      resamples: int, level: float, seed: int) -> dict[str, tuple[float, float]]:
    """Interval of every figure ``statistics(rows)`` returns, over resamples of ``groups``."""
    draws = [statistics(rows) for rows in group_resamples(groups, resamples=resamples, seed=seed)]
    return {name: percentile_interval(np.array([d[name] for d in draws], dtype=float), level) for name in draws[0]}


def weighted_over_repeats(pooled: PooledPredictions, weights: np.ndarray, calibration_bins: int
                          ) -> dict[str, np.ndarray]:
    """:func:`averaged_over_repeats` of every resample at once: ``weights`` is (resamples, rows)."""
    per_repeat = []
    for repeat in np.unique(pooled.repeats):
        rows = pooled.rows_of(repeat)
        if pooled.probabilities.shape[1] > 2:
            per_repeat.append(weighted_multiclass_headline(weights[:, rows], pooled.labels[rows],
                                                           pooled.probabilities[rows]))
        else:
            per_repeat.append(weighted_headline(weights[:, rows], pooled.labels[rows],
                                                pooled.probabilities[rows, 1], pooled.thresholds[rows],
                                                calibration_bins))
    return per_repeat[0] if len(per_repeat) == 1 else mean_where_defined(per_repeat)


def keyed_figures(per_classifier: dict[str, dict]) -> dict:
    """Each classifier's figures as ``<classifier>.<figure>``, and for two classifiers the second minus the
    first as ``difference.<figure>`` (counts excepted): the keys :func:`headline_with_intervals` reads."""
    names = list(per_classifier)
    keyed = {f"{name}.{k}": v for name, figures in per_classifier.items() for k, v in figures.items()}
    if len(names) == 2:
        first, second = per_classifier[names[0]], per_classifier[names[1]]
        keyed |= {f"difference.{k}": second[k] - first[k] for k in second if k not in COUNTS}
    return keyed


def pooled_figures(by_classifier: dict[str, PooledPredictions], rows: np.ndarray, calibration_bins: int
                   ) -> dict[str, float]:
    """:func:`keyed_figures` of ``rows``: on every row the point estimates, on a resample's rows its draw."""
    return keyed_figures({name: averaged_over_repeats(p, rows, calibration_bins)
                          for name, p in by_classifier.items()})


# Resamples computed together by counted_intervals: bounds its working memory (a few arrays of this many x
# rows floats) on large datasets with repeats.
RESAMPLES_AT_ONCE = 250


def counted_intervals(by_classifier: dict[str, PooledPredictions], *, calibration_bins: int, resamples: int,
                      level: float, seed: int) -> dict[str, tuple[float, float]]:
    """The interval of every figure of :func:`pooled_figures`, each resample's figures computed from counts
    per row (:mod:`~ultrasound_transfer.evaluation.weighted_figures`), :data:`RESAMPLES_AT_ONCE` at a time."""
    weights = resample_weights(next(iter(by_classifier.values())).groups, resamples=resamples, seed=seed)
    chunks = [keyed_figures({name: weighted_over_repeats(p, weights[start:start + RESAMPLES_AT_ONCE],
                                                         calibration_bins) for name, p in by_classifier.items()})
              for start in range(0, resamples, RESAMPLES_AT_ONCE)]
    return {key: percentile_interval(np.concatenate([chunk[key] for chunk in chunks]), level) for key in chunks[0]}


def resampled_intervals(by_classifier: dict[str, PooledPredictions], *, calibration_bins: int, resamples: int,
                        level: float, seed: int) -> dict[str, tuple[float, float]]:
    """The same intervals as :func:`counted_intervals`, resample by resample from the resampled rows: the
    definition the counted ones are tested and timed against."""
    return bootstrap_figures(lambda rows: pooled_figures(by_classifier, rows, calibration_bins),
                             next(iter(by_classifier.values())).groups, resamples=resamples, level=level, seed=seed)


def headline_with_intervals(by_classifier: dict[str, PooledPredictions], *, calibration_bins: int, resamples: int,
                            level: float, seed: int) -> dict[str, dict[str, float]]:
    """Per classifier: each headline figure and its ``_ci_low`` / ``_ci_high``, and the paired difference
    of the second classifier minus the first (``<second>_minus_<first>``) for each figure.

    Every classifier must hold the same rows in the same order (the same
    images, repeats and groups), so one resample of groups fits all.
    """
    names = list(by_classifier)
    point = pooled_figures(by_classifier, np.arange(len(by_classifier[names[0]].labels)), calibration_bins)
    intervals = counted_intervals(by_classifier, calibration_bins=calibration_bins, resamples=resamples, level=level,
                                  seed=seed)
    result: dict[str, dict[str, float]] = {}
    for key, value in point.items():
        owner, name = key.split(".")
        owner = f"{names[1]}_minus_{names[0]}" if owner == "difference" else owner
        section = result.setdefault(owner, {})
        section[name] = value
        if name not in COUNTS:
            section[f"{name}_ci_low"], section[f"{name}_ci_high"] = intervals[key]
    return result
