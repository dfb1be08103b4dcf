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
    ``n_test = 0`` this is the ordinary one-sample t-test.  When every
    difference is the same there is no variance to test against: the p-value
    is NaN and ``note`` says why.
    """
    d = np.asarray(differences, dtype=float)
    k = len(d)
    mean = float(d.mean())
    if k < 2:
        return {"mean_diff": mean, "ci_low": math.nan, "ci_high": math.nan, "p_value_t": math.nan}
    se = math.sqrt((1 / k + n_test / n_train) * d.var(ddof=1))
    if se == 0:
        # Every fold differs by the same amount: the t statistic is undefined (0/0 or x/0), so no
        # p-value is claimed; the interval is that common difference, which every fold showed.
        return {"mean_diff": mean, "ci_low": mean, "ci_high": mean, "p_value_t": math.nan,
                "note": f"all {k} fold differences equal {mean:+.3g}: no t-test"}
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


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: family-wise error control over all the given tests.

    NaN p-values (tests that could not be made) stay NaN and do not count in the family.
    """
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), np.nan)
    order = valid[np.argsort(p[valid])]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def friedman_p(scores: np.ndarray) -> float:
    """Friedman test over (folds x strategies) scores: do the strategies differ at all?

    Folds are the blocks.  NaN with fewer than three strategies (the test needs
    three) or when every score ties within every fold.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.shape[1] < 3 or np.all(scores == scores[:, :1]):
        return math.nan
    return float(stats.friedmanchisquare(*scores.T).pvalue)


def best_against_rest(scores: np.ndarray, names: list, n_train: float, n_test: float) -> dict:
    """The best of several strategies scored on the same folds, tested as a selection.

    ``scores`` is (folds x strategies).  The best strategy is the highest mean;
    picking it and then testing it against the runner-up alone would ignore that
    it was picked.  So: a Friedman test across all strategies (folds as blocks),
    and the corrected resampled t-test of the best against *every* other
    strategy with Holm's adjustment over those comparisons.  The best is
    supported when the Friedman p and every adjusted p are below 0.05.
    """
    scores = np.asarray(scores, dtype=float)
    means = scores.mean(axis=0)
    best = int(np.argmax(means))
    others = [j for j in np.argsort(-means) if j != best]
    tests = [corrected_resampled_t(scores[:, best] - scores[:, j], n_train, n_test) for j in others]
    adjusted = holm_adjusted([t["p_value_t"] for t in tests])
    comparisons = [{"against": names[j], **t, "p_value_holm": a} for j, t, a in zip(others, tests, adjusted)]
    friedman = friedman_p(scores)
    # NaN (no test possible) compares False, so it never counts as support.
    supported = (len(names) < 3 or friedman < 0.05) and all(c["p_value_holm"] < 0.05 for c in comparisons)
    return {"best": names[best], "friedman_p": friedman, "comparisons": comparisons, "supported": bool(supported)}


def format_p(p: float) -> str:
    """A p-value for a table: three decimals, or 'n/a' where no test could be made."""
    return "n/a" if math.isnan(p) else f"{p:.3f}"
