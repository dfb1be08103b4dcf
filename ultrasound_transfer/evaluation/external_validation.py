"""External validation: the networks of one dataset's folds read on every image of another dataset.

Cross-validation inside one dataset says how a network does on more images
from the same scanners and curators; a clinician asks first how it does on
another hospital's (Bleeker et al., J Clin Epidemiol 56, 2003; Park & Han,
Radiology 286, 2018: external validation on data from another site).  Here
the networks trained on the source dataset's splits are applied, with no
training on it, to every image of the target dataset.

The study's model for a new image is the *ensemble of its splits* (every
fold of every repeat), each split with the classifiers ``evaluate`` fitted
beside it and kept (:mod:`ultrasound_transfer.outputs.classifiers`): its
probability of malignant is the mean of the splits' probabilities (the dense
head's Platt-scaled log-odds, or its softmax under
``evaluation.dense_calibration: none``; the SVM's Platt-scaled decision
value), and its operating point is the mean of the splits' thresholds (image
or case), each chosen on its own inner validation images.  Choosing a new
threshold would need images that none of the splits learned from, and the
source dataset has none left; the target's images must not set it, since
they are the test.  It is the model one would apply to a new scan.

The *gap* compares like with like, split by split
(:func:`split_by_split_gap`): each split's network with its own classifiers,
calibration and threshold, read on its own test fold (internal) and on every
image of the target (external); the splits' differences are averaged.  Its
interval resamples the source's groups and the target's groups
independently (the percentile bootstrap of a difference of two independent
samples; Efron & Tibshirani 1993, ch. 13), every split recomputed on each
resample (from counts per image, hundreds of resamples at once, as
:mod:`~ultrasound_transfer.evaluation.weighted_figures` computes the headline
intervals).  The ensemble's own figures on the target are reported beside, as
the deployed model's; its drop from the pooled internal figures would mix the
site with ensembling (averaging networks often helps; Lakshminarayanan et
al., NeurIPS 2017), with the averaging of thresholds, and with the penalty
pooled figures pay for scores that drift between splits, so no such gap is
reported.
"""

from __future__ import annotations

import numpy as np

from ultrasound_transfer.evaluation.calibration import brier_score, expected_calibration_error
from ultrasound_transfer.evaluation.classifiers import SplitReading, two_columns
from ultrasound_transfer.evaluation.intervals import (
    RESAMPLES_AT_ONCE,
    PooledPredictions,
    binary_auc,
    group_resamples,
    mean_where_defined,
    percentile_interval,
    resample_weights,
)
from ultrasound_transfer.evaluation.scoring import threshold_metrics
from ultrasound_transfer.evaluation.weighted_figures import (
    threshold_figures,
    weighted_auc,
    weighted_brier,
    weighted_ece,
)

# The figures whose internal-to-external gap is reported.
GAP_FIGURES = ("roc_auc", "sensitivity", "specificity", "balanced_accuracy", "brier", "ece")


def ensemble_predictions(readings: list[SplitReading], *, labels: np.ndarray, groups: np.ndarray) -> PooledPredictions:
    """The ensemble of the splits' readings of the same images: mean probability, mean operating point."""
    malignant = np.mean([r.probabilities[:, 1] for r in readings], axis=0)
    threshold = float(np.mean([r.threshold for r in readings]))
    return PooledPredictions(labels=np.asarray(labels), probabilities=two_columns(malignant),
                             thresholds=np.full(len(malignant), threshold), repeats=np.ones(len(malignant), int),
                             groups=np.asarray(groups))


def split_reading_pooled(reading: SplitReading, *, labels: np.ndarray, groups: np.ndarray) -> PooledPredictions:
    """One split's reading of the target's images as pooled predictions (its own threshold on every row)."""
    return PooledPredictions(labels=np.asarray(labels), probabilities=reading.probabilities,
                             thresholds=np.full(len(labels), reading.threshold), repeats=np.ones(len(labels), int),
                             groups=np.asarray(groups))


def gap_figures(pooled: PooledPredictions, rows: np.ndarray, calibration_bins: int) -> dict[str, float]:
    """The figures of :data:`GAP_FIGURES` on ``rows`` (two classes), and nothing costlier; NaN for no rows (a
    resample that drew none of a split's test groups)."""
    if not len(rows):
        return dict.fromkeys(GAP_FIGURES, np.nan)
    labels, malignant = pooled.labels[rows], pooled.probabilities[rows, 1]
    at_threshold = threshold_metrics(labels, malignant, pooled.thresholds[rows])
    return {"roc_auc": binary_auc(labels, malignant), "sensitivity": at_threshold["sensitivity"],
            "specificity": at_threshold["specificity"], "balanced_accuracy": at_threshold["balanced_accuracy"],
            "brier": brier_score(labels, malignant), "ece": expected_calibration_error(labels, malignant,
                                                                                       calibration_bins)}


def counted_gap_figures(weights: np.ndarray, pooled: PooledPredictions, rows: np.ndarray, calibration_bins: int
                        ) -> dict[str, np.ndarray]:
    """:func:`gap_figures` of ``rows`` in every resample at once: ``weights`` is (resamples, all of ``pooled``'s
    rows) of floats, each resample's count of each row; NaN where a resample draws none of ``rows``."""
    # A copy, also where rows are every row: a view sits elsewhere in memory, and BLAS then sums in another order,
    # moving the figures' last bits (docs/reproducibility.md).
    drawn = weights[:, rows]
    malignant, probability = pooled.labels[rows] == 1, pooled.probabilities[rows, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        at_threshold = threshold_figures(drawn, malignant, probability >= pooled.thresholds[rows])
        ece = weighted_ece(drawn, malignant, probability, calibration_bins)
    return {"roc_auc": weighted_auc(drawn, malignant, probability), "sensitivity": at_threshold["sensitivity"],
            "specificity": at_threshold["specificity"], "balanced_accuracy": at_threshold["balanced_accuracy"],
            "brier": weighted_brier(drawn, malignant, probability), "ece": ece}


def split_means(internal: PooledPredictions, split_rows: list[np.ndarray], external: list[PooledPredictions],
                target_rows: np.ndarray, calibration_bins: int) -> tuple[dict, dict]:
    """The means over the splits of :func:`gap_figures`: internal (each split's ``split_rows``) and external
    (each split's reading of ``target_rows``)."""
    with np.errstate(all="ignore"):         # a split lacking a class: its rates are NaN, left out of the mean
        return (mean_where_defined([gap_figures(internal, rows, calibration_bins) for rows in split_rows]),
                mean_where_defined([gap_figures(split, target_rows, calibration_bins) for split in external]))


def split_by_split_gap(internal: PooledPredictions, internal_splits: np.ndarray, external: list[PooledPredictions], *,
                       calibration_bins: int, resamples: int, level: float, seed: int) -> dict[str, float]:
    """External against internal, split by split: each split's network and classifiers, read on its own test
    fold (``internal``: ``evaluate``'s predictions, ``internal_splits`` naming each row's split) and on every
    image of the target (``external``, one per split, in split order), averaged over the splits.

    For each of :data:`GAP_FIGURES`: ``internal_<f>`` and ``external_<f>`` (means over splits) and
    ``external_minus_internal_<f>`` (the mean of the splits' differences) with ``_ci_low`` / ``_ci_high`` from
    a bootstrap that resamples the source's groups and the target's groups, independently, and recomputes every
    split on each resample, so that the interval carries both datasets' sampling and the splits' correlation
    (they share training images and read the same target images).  Unlike a gap of the ensemble, nothing here
    mixes the site with ensembling or with averaged thresholds.
    """
    split_rows = [np.flatnonzero(internal_splits == k) for k in np.unique(internal_splits)]
    every_target_image = np.arange(len(external[0].labels))
    inside, outside = split_means(internal, split_rows, external, every_target_image, calibration_bins)
    # As floats once, not once per split: the figures' weighted sums are taken in floats.
    internal_weights = resample_weights(internal.groups, resamples=resamples, seed=seed).astype(float)
    external_weights = resample_weights(external[0].groups, resamples=resamples, seed=seed + 1).astype(float)
    differences: dict[str, list[np.ndarray]] = {f: [] for f in GAP_FIGURES}
    for start in range(0, resamples, RESAMPLES_AT_ONCE):
        block = slice(start, start + RESAMPLES_AT_ONCE)
        drawn_inside = mean_where_defined([counted_gap_figures(internal_weights[block], internal, rows,
                                                               calibration_bins) for rows in split_rows])
        drawn_outside = mean_where_defined([counted_gap_figures(external_weights[block], split, every_target_image,
                                                                calibration_bins) for split in external])
        for figure in GAP_FIGURES:
            differences[figure].append(drawn_outside[figure] - drawn_inside[figure])
    result = {}
    for figure in GAP_FIGURES:
        result[f"internal_{figure}"], result[f"external_{figure}"] = float(inside[figure]), float(outside[figure])
        result[f"external_minus_internal_{figure}"] = float(outside[figure] - inside[figure])
        low, high = percentile_interval(np.concatenate(differences[figure]), level)
        result[f"external_minus_internal_{figure}_ci_low"] = low
        result[f"external_minus_internal_{figure}_ci_high"] = high
    return result


def resampled_gap_intervals(internal: PooledPredictions, internal_splits: np.ndarray,
                            external: list[PooledPredictions], *, calibration_bins: int, resamples: int, level: float,
                            seed: int) -> dict[str, tuple[float, float]]:
    """The intervals of :func:`split_by_split_gap`, resample by resample from the resampled rows: the
    definition its counted ones are tested and timed against."""
    split_ids = np.unique(internal_splits)
    draws = []
    for rows_in, rows_out in zip(group_resamples(internal.groups, resamples=resamples, seed=seed),
                                 group_resamples(external[0].groups, resamples=resamples, seed=seed + 1)):
        inside, outside = split_means(internal, [rows_in[internal_splits[rows_in] == k] for k in split_ids],
                                      external, rows_out, calibration_bins)
        draws.append({f: outside[f] - inside[f] for f in GAP_FIGURES})
    return {f: percentile_interval(np.array([d[f] for d in draws], dtype=float), level) for f in GAP_FIGURES}
