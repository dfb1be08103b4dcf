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
resample.  The ensemble's own figures on the target are reported beside, as
the deployed model's; its drop from the pooled internal figures
(:func:`transfer_gap`) would mix the site with ensembling (averaging networks
often helps; Lakshminarayanan et al., NeurIPS 2017), with the averaging of
thresholds, and with the penalty pooled figures pay for scores that drift
between splits.
"""

from __future__ import annotations

import numpy as np

from ultrasound_transfer.evaluation.calibration import brier_score, expected_calibration_error
from ultrasound_transfer.evaluation.classifiers import SplitReading, two_columns
from ultrasound_transfer.evaluation.intervals import (
    PooledPredictions,
    averaged_over_repeats,
    binary_auc,
    group_resamples,
    percentile_interval,
)
from ultrasound_transfer.evaluation.scoring import threshold_metrics

# The figures whose internal-to-external gap is reported.
GAP_FIGURES = ("roc_auc", "sensitivity", "specificity", "balanced_accuracy", "brier", "ece")


def ensemble_predictions(readings: list[SplitReading], *, labels: np.ndarray, groups: np.ndarray) -> PooledPredictions:
    """The ensemble of the splits' readings of the same images: mean probability, mean operating point."""
    malignant = np.mean([r.probabilities[:, 1] for r in readings], axis=0)
    threshold = float(np.mean([r.threshold for r in readings]))
    return PooledPredictions(labels=np.asarray(labels), probabilities=two_columns(malignant),
                             thresholds=np.full(len(malignant), threshold), repeats=np.ones(len(malignant), int),
                             groups=np.asarray(groups))


def transfer_gap(internal: dict[str, PooledPredictions], external: dict[str, PooledPredictions], *,
                 calibration_bins: int, resamples: int, level: float, seed: int) -> dict[str, dict[str, float]]:
    """Per classifier, for each of :data:`GAP_FIGURES`: ``internal_<f>``, ``external_<f>`` and
    ``external_minus_internal_<f>`` with ``_ci_low`` / ``_ci_high``.

    ``internal`` holds the source's pooled out-of-fold predictions, ``external``
    the ensemble's on the target; the source's and the target's groups are
    resampled independently (seeds ``seed`` and ``seed + 1``).
    """
    def figures(pooled: dict[str, PooledPredictions], rows: np.ndarray) -> dict[str, dict[str, float]]:
        return {name: averaged_over_repeats(p, rows, calibration_bins) for name, p in pooled.items()}

    first_internal, first_external = next(iter(internal.values())), next(iter(external.values()))
    inside = figures(internal, np.arange(len(first_internal.labels)))
    outside = figures(external, np.arange(len(first_external.labels)))
    internal_draws = [figures(internal, rows) for rows in
                      group_resamples(first_internal.groups, resamples=resamples, seed=seed)]
    external_draws = [figures(external, rows) for rows in
                      group_resamples(first_external.groups, resamples=resamples, seed=seed + 1)]
    result: dict[str, dict[str, float]] = {}
    for name in internal:
        section = result.setdefault(name, {})
        for figure in GAP_FIGURES:
            section[f"internal_{figure}"] = inside[name][figure]
            section[f"external_{figure}"] = outside[name][figure]
            section[f"external_minus_internal_{figure}"] = outside[name][figure] - inside[name][figure]
            differences = np.array([e[name][figure] - i[name][figure]
                                    for i, e in zip(internal_draws, external_draws)], dtype=float)
            low, high = percentile_interval(differences, level)
            section[f"external_minus_internal_{figure}_ci_low"] = low
            section[f"external_minus_internal_{figure}_ci_high"] = high
    return result


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


def split_by_split_gap(internal: PooledPredictions, internal_splits: np.ndarray, external: list[PooledPredictions], *,
                       calibration_bins: int, resamples: int, level: float, seed: int) -> dict[str, float]:
    """External against internal, split by split: each split's network and classifiers, read on its own test
    fold (``internal``: ``evaluate``'s predictions, ``internal_splits`` naming each row's split) and on every
    image of the target (``external``, one per split, in split order), averaged over the splits.

    For each of :data:`GAP_FIGURES`: ``internal_<f>`` and ``external_<f>`` (means over splits) and
    ``external_minus_internal_<f>`` (the mean of the splits' differences) with ``_ci_low`` / ``_ci_high`` from
    a bootstrap that resamples the source's groups and the target's groups, independently, and recomputes every
    split on each resample, so that the interval carries both datasets' sampling and the splits' correlation
    (they share training images and read the same target images).  Unlike the ensemble's gap, nothing here
    mixes the site with ensembling or with averaged thresholds.
    """
    split_ids = np.unique(internal_splits)

    def means(rows_in: np.ndarray, rows_out: np.ndarray) -> tuple[dict, dict]:
        inside = [gap_figures(internal, rows_in[internal_splits[rows_in] == k], calibration_bins) for k in split_ids]
        outside = [gap_figures(split, rows_out, calibration_bins) for split in external]
        return ({f: float(np.nanmean([x[f] for x in inside])) for f in GAP_FIGURES},
                {f: float(np.nanmean([x[f] for x in outside])) for f in GAP_FIGURES})

    with np.errstate(all="ignore"):
        inside, outside = means(np.arange(len(internal.labels)), np.arange(len(external[0].labels)))
        draws = [means(rows_in, rows_out) for rows_in, rows_out in zip(
            group_resamples(internal.groups, resamples=resamples, seed=seed),
            group_resamples(external[0].groups, resamples=resamples, seed=seed + 1))]
    result = {}
    for figure in GAP_FIGURES:
        result[f"internal_{figure}"], result[f"external_{figure}"] = inside[figure], outside[figure]
        result[f"external_minus_internal_{figure}"] = outside[figure] - inside[figure]
        low, high = percentile_interval(np.array([o[figure] - i[figure] for i, o in draws], dtype=float), level)
        result[f"external_minus_internal_{figure}_ci_low"] = low
        result[f"external_minus_internal_{figure}_ci_high"] = high
    return result
