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
head's softmax; the SVM's Platt-scaled decision value), and its operating
point is the mean of the splits' thresholds, each chosen on its own inner
validation images.  Choosing a new
threshold would need images that none of the splits learned from, and the
source dataset has none left; the target's images must not set it, since
they are the test.  It is the model one would apply to a new scan.

The *gap* compares the ensemble on the target with the source's
cross-validated figures (pooled out-of-fold predictions, as ``evaluate``
reports them).  The two come from different patients, so its interval
resamples the source's groups and the target's groups independently, each
resample giving one difference (the percentile bootstrap of a difference of
two independent samples; Efron & Tibshirani 1993, ch. 13).  It sets an
ensemble against single networks: averaging networks often helps
(Lakshminarayanan et al., NeurIPS 2017), which this project does not
measure, so the gap is the ensemble's drop, not necessarily a single
network's.
"""

from __future__ import annotations

import numpy as np

from ultrasound_transfer.evaluation.classifiers import SplitReading, two_columns
from ultrasound_transfer.evaluation.intervals import (
    PooledPredictions,
    averaged_over_repeats,
    group_resamples,
    percentile_interval,
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
