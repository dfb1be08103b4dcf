"""Paired comparisons of two classifiers over cross-validation folds.

Fold scores are not independent (the training parts overlap), so the plain
paired t-test is too optimistic.  The corrected resampled t-test of Nadeau and
Bengio (Machine Learning 52, 2003) inflates the variance by ``n_test/n_train``
to account for it.  The Wilcoxon signed-rank test is given beside it as a
rank-based check; with 5 folds its smallest possible two-sided p-value is
0.0625, so it can never reach 0.05 there.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def corrected_resampled_t(differences: np.ndarray, n_train: float, n_test: float, confidence: float = 0.95) -> dict:
    """Mean of fold-paired ``differences`` with its corrected t interval and two-sided p-value.

    Variance of the mean: ``(1/k + n_test/n_train) * s^2`` with ``s^2`` the
    sample variance of the k differences; ``k - 1`` degrees of freedom.  With
    ``n_test = 0`` this is the ordinary one-sample t-test.
    """
    d = np.asarray(differences, dtype=float)
    k = len(d)
    mean = float(d.mean())
    if k < 2:
        return {"mean_diff": mean, "ci_low": math.nan, "ci_high": math.nan, "p_value_t": math.nan}
    se = math.sqrt((1 / k + n_test / n_train) * d.var(ddof=1))
    if se == 0:
        return {"mean_diff": mean, "ci_low": mean, "ci_high": mean, "p_value_t": 1.0 if mean == 0 else 0.0}
    t = mean / se
    half = stats.t.ppf(0.5 + confidence / 2, k - 1) * se
    return {"mean_diff": mean, "ci_low": mean - half, "ci_high": mean + half,
            "p_value_t": float(2 * stats.t.sf(abs(t), k - 1))}


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when every difference is zero."""
    d = np.asarray(differences, dtype=float)
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def mean_fold_sizes(folds_record: dict) -> tuple[float, float]:
    """Mean training and test sizes over the folds of a ``data/folds/<dataset>.json`` record,
    the ``n_train`` and ``n_test`` of the corrected t-test."""
    n_test = float(np.mean([len(f["test_indices"]) for f in folds_record["folds"]]))
    return folds_record["n_images"] - n_test, n_test


def compare_paired(a: np.ndarray, b: np.ndarray, n_train: float, n_test: float) -> dict:
    """``a - b`` per fold: mean, 95 % corrected-t interval, t and Wilcoxon p-values."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return {**corrected_resampled_t(d, n_train, n_test), "p_value_wilcoxon": wilcoxon_p(d)}
