"""The headline figures of many bootstrap resamples at once, each resample a row of weights.

A group bootstrap resample holds every image of each drawn group as often as
the group was drawn, so it is the pooled predictions with a count per image.
Computing a figure from those counts rather than from the resample's rows
gives the same value, and one array operation then serves hundreds of
resamples: :func:`weighted_headline` takes a matrix of counts, one row per
resample, and returns every figure of
:func:`ultrasound_transfer.evaluation.intervals.headline_of` (two classes) for
each row; :func:`weighted_multiclass_headline` those of more classes.

The figures are those of the per-resample functions, computed the same way
on the counts:

* the confusion counts, and so sensitivity, specificity, the predictive
  values and the accuracies, are sums of whole counts: exactly equal;
* the ROC-AUC is the Mann-Whitney statistic with ties counted half, whose
  numerator and denominator are whole or half numbers: exactly equal;
* the Brier score, the binned calibration error, the debiased calibration
  error (its bins of equal counts cut through the sorted counts, an image
  drawn twice filling two places) and the calibration intercept and slope
  (the same Newton-Raphson iterations, each resample stopping at its own
  convergence) equal the per-resample values up to the last bits of float
  rounding, as their sums are taken in another order;
* of more classes, accuracy is exactly equal; balanced accuracy and the
  macro one-vs-rest ROC-AUC (the two-class AUC of each class against the
  rest) equal up to the rounding of their means.

``tests/evaluation/test_weighted_figures.py`` checks each against the
per-resample functions on resampled rows.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ultrasound_transfer.evaluation.calibration import bin_of, logit

# The ridge and the convergence bound of calibration.logistic_fit, for the same fits.
RIDGE, CONVERGED, MAX_ITERATIONS = 1e-6, 1e-10, 100


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is 0 (an undefined rate)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def threshold_figures(weights: np.ndarray, malignant: np.ndarray, called: np.ndarray) -> dict[str, np.ndarray]:
    """The operating-point figures of :func:`ultrasound_transfer.evaluation.scoring.threshold_metrics`."""
    tp, fp = weights @ (called & malignant), weights @ (called & ~malignant)
    tn, fn = weights @ (~called & ~malignant), weights @ (~called & malignant)
    sensitivity, specificity = ratio(tp, tp + fn), ratio(tn, tn + fp)
    return {"accuracy": (tp + tn) / weights.sum(axis=1), "balanced_accuracy": (sensitivity + specificity) / 2,
            "sensitivity": sensitivity, "specificity": specificity, "ppv": ratio(tp, tp + fp),
            "npv": ratio(tn, tn + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def weighted_auc(weights: np.ndarray, malignant: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Mann-Whitney ROC-AUC per row of ``weights``, ties counted half; NaN without both classes."""
    order = np.argsort(probability, kind="stable")
    sorted_probability = probability[order]
    starts = np.flatnonzero(np.r_[True, sorted_probability[1:] != sorted_probability[:-1]])   # tied blocks
    sorted_weights = weights[:, order]
    positive = np.add.reduceat(sorted_weights * malignant[order], starts, axis=1)
    negative = np.add.reduceat(sorted_weights * ~malignant[order], starts, axis=1)
    below = np.cumsum(negative, axis=1) - negative
    wins = np.sum(positive * (below + negative / 2), axis=1)
    return ratio(wins, positive.sum(axis=1) * negative.sum(axis=1))


def weighted_ece(weights: np.ndarray, malignant: np.ndarray, probability: np.ndarray, bins: int) -> np.ndarray:
    """:func:`~ultrasound_transfer.evaluation.calibration.expected_calibration_error` per row of ``weights``."""
    members = np.eye(bins)[bin_of(probability, bins)]                      # (images, bins)
    predicted = weights @ (members * probability[:, None])
    observed = weights @ (members * malignant[:, None])
    return np.sum(np.abs(predicted - observed), axis=1) / weights.sum(axis=1)


def prefix_sums(cumulative_counts: np.ndarray, running: list[tuple[np.ndarray, np.ndarray]],
                positions: np.ndarray) -> list[np.ndarray]:
    """For each ``(cumulative_values, values)`` of ``running``: the sum of the first ``positions[r]`` values of
    row r's expanded sequence (each image repeated by its count).

    ``cumulative_counts`` and each ``cumulative_values`` are the running sums
    of the counts and of count x value along each row, images in sorted
    order; the cut is searched once for all of them.
    """
    rows, width = cumulative_counts.shape
    stride = cumulative_counts[:, -1].max() + 1
    offsets = np.arange(rows) * stride
    # The first image whose running count reaches the position: its copies straddle the cut.
    at = np.searchsorted((cumulative_counts + offsets[:, None]).ravel(), positions + offsets) - np.arange(rows) * width
    at = np.minimum(at, width - 1)
    reached = cumulative_counts[np.arange(rows), at]
    return [np.where(positions > 0, cumulative_values[np.arange(rows), at] - (reached - positions) * values[at], 0.0)
            for cumulative_values, values in running]


def weighted_debiased_calibration_error(weights: np.ndarray, malignant: np.ndarray, probability: np.ndarray,
                                        bins: int) -> np.ndarray:
    """:func:`~ultrasound_transfer.evaluation.calibration.debiased_calibration_error` per row of ``weights``.

    Images sorted by probability, then outcome (the per-resample function's
    order); row r's ``n`` drawn images are cut into ``min(bins, n // 2)``
    parts as ``numpy.array_split`` cuts them.
    """
    outcome = malignant.astype(float)
    order = np.lexsort((outcome, probability))
    sorted_weights, sorted_outcome, sorted_probability = weights[:, order], outcome[order], probability[order]
    counts = np.cumsum(sorted_weights, axis=1)
    running = [(np.cumsum(sorted_weights * sorted_outcome, axis=1), sorted_outcome),
               (np.cumsum(sorted_weights * sorted_probability, axis=1), sorted_probability)]
    n = counts[:, -1]
    parts = np.minimum(bins, np.maximum(1, n // 2))
    size, larger = n // parts, n % parts

    def cut(j: int) -> np.ndarray:
        return np.where(j < parts, j * size + np.minimum(j, larger), n)

    total = np.zeros(len(weights))
    start = cut(0)
    outcomes_before, probabilities_before = prefix_sums(counts, running, start)
    for j in range(int(parts.max())):
        end = cut(j + 1)
        outcomes_to, probabilities_to = prefix_sums(counts, running, end)    # the next part's start, too
        inside = end - start
        present = inside > 0
        safe = np.where(present, inside, 1)
        observed = (outcomes_to - outcomes_before) / safe
        predicted = (probabilities_to - probabilities_before) / safe
        chance = np.where(inside > 1, observed * (1 - observed) / np.where(inside > 1, inside - 1, 1), 0.0)
        total += np.where(present, inside * ((observed - predicted) ** 2 - chance), 0.0)
        start, outcomes_before, probabilities_before = end, outcomes_to, probabilities_to
    return np.sqrt(np.maximum(total / n, 0.0))


def weighted_logistic_fit(weights: np.ndarray, outcome: np.ndarray, covariates: list[np.ndarray],
                          offset: np.ndarray) -> np.ndarray:
    """:func:`~ultrasound_transfer.evaluation.calibration.logistic_fit` of each row of ``weights`` (one or two
    covariates); each row iterates until its own step is below the bound, as the single fit does."""
    k = len(covariates)
    beta = np.zeros((len(weights), k))
    active = np.ones(len(weights), bool)
    for _ in range(MAX_ITERATIONS):
        if not active.any():
            break
        w, b = weights[active], beta[active]
        eta = offset + sum(b[:, [i]] * covariates[i] for i in range(k))
        p = expit(eta)                          # logistic_fit's exp(-logaddexp(0, -eta)), faster
        residual, curvature = w * (outcome - p), w * (p * (1 - p))
        gradient = np.stack([residual @ c for c in covariates], axis=1) - RIDGE * b
        if k == 1:
            step = gradient / (curvature @ covariates[0] ** 2 + RIDGE)[:, None]
        else:
            h00 = curvature @ covariates[0] ** 2 + RIDGE
            h01 = curvature @ (covariates[0] * covariates[1])
            h11 = curvature @ covariates[1] ** 2 + RIDGE
            det = h00 * h11 - h01 * h01
            step = np.stack([(h11 * gradient[:, 0] - h01 * gradient[:, 1]) / det,
                             (h00 * gradient[:, 1] - h01 * gradient[:, 0]) / det], axis=1)
        beta[active] = b + step
        still = np.max(np.abs(step), axis=1) >= CONVERGED
        active[np.flatnonzero(active)[~still]] = False
    return beta


def weighted_calibration_intercept_slope(weights: np.ndarray, malignant: np.ndarray,
                                         probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~ultrasound_transfer.evaluation.calibration.calibration_intercept_slope` per row of ``weights``."""
    outcome = malignant.astype(float)
    lp, ones = logit(probability), np.ones(len(probability))
    both = ((weights @ outcome) > 0) & ((weights @ (1 - outcome)) > 0)
    intercept, slope = np.full(len(weights), np.nan), np.full(len(weights), np.nan)
    if both.any():
        intercept[both] = weighted_logistic_fit(weights[both], outcome, [ones], offset=lp)[:, 0]
        slope[both] = weighted_logistic_fit(weights[both], outcome, [ones, lp], offset=np.zeros(len(lp)))[:, 1]
    return intercept, slope


def weighted_brier(weights: np.ndarray, malignant: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """The Brier score (the mean squared difference of probability and outcome; Brier, Monthly Weather Review
    78, 1950) per row of ``weights``: :func:`~ultrasound_transfer.evaluation.calibration.brier_score` of each
    resample; NaN for a row that draws no image."""
    return ratio(weights @ (probability - malignant) ** 2, weights.sum(axis=1))


def weighted_headline(weights: np.ndarray, labels: np.ndarray, malignant_probability: np.ndarray,
                      thresholds: np.ndarray, calibration_bins: int) -> dict[str, np.ndarray]:
    """Every two-class headline figure of ``headline_of``, per row of ``weights`` (resamples x images)."""
    malignant = np.asarray(labels) == 1
    probability = np.asarray(malignant_probability, dtype=float)
    weights = np.asarray(weights, dtype=float)
    result = threshold_figures(weights, malignant, probability >= thresholds)
    result["roc_auc"] = weighted_auc(weights, malignant, probability)
    result["brier"] = weighted_brier(weights, malignant, probability)
    result["ece"] = weighted_ece(weights, malignant, probability, calibration_bins)
    result["calibration_error_debiased"] = weighted_debiased_calibration_error(
        weights, malignant, probability, calibration_bins)
    result["calibration_intercept"], result["calibration_slope"] = weighted_calibration_intercept_slope(
        weights, malignant, probability)
    return result


def weighted_multiclass_headline(weights: np.ndarray, labels: np.ndarray, probabilities: np.ndarray
                                 ) -> dict[str, np.ndarray]:
    """The headline figures of ``headline_of`` for more than two classes, per row of ``weights``: accuracy,
    balanced accuracy (the mean recall of the classes drawn) and the macro one-vs-rest ROC-AUC (each class's
    Mann-Whitney AUC against the rest, NaN unless every class is drawn)."""
    labels = np.asarray(labels)
    weights = np.asarray(weights, dtype=float)
    classes = np.arange(probabilities.shape[1])
    predicted = probabilities.argmax(axis=1)
    members = labels[:, None] == classes                                    # (images, classes)
    drawn = weights @ members
    recalls = ratio(weights @ (members & (predicted[:, None] == classes)), drawn)
    aucs = np.stack([weighted_auc(weights, members[:, c], probabilities[:, c]) for c in classes], axis=1)
    return {"roc_auc": np.where((drawn > 0).all(axis=1), aucs.mean(axis=1), np.nan),
            "accuracy": weights @ (predicted == labels) / weights.sum(axis=1),
            "balanced_accuracy": np.nanmean(recalls, axis=1)}
