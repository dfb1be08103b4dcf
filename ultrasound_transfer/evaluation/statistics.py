"""Paired comparisons of classifiers or strategies over the folds of (repeated) cross-validation.

Fold scores are not independent (the training parts overlap), so the plain
paired t-test is too optimistic.  The corrected resampled t-test of Nadeau and
Bengio (Machine Learning 52, 2003) inflates the variance of the mean
difference by ``n_test/n_train``; over ``r`` repeats of ``k``-fold
cross-validation it becomes the corrected repeated k-fold cv test of
Bouckaert and Frank (PAKDD 2004): the ``k * r`` fold differences, variance
``(1/(k r) + n_test/n_train) s^2``, ``k r - 1`` degrees of freedom.
``n_train`` is the number of images a classifier actually learned from in a
fold (the fit part, recorded per fold by ``evaluate``), not every non-test
image.  The Wilcoxon signed-rank test is given beside it as a rank-based
check; with 5 folds its smallest possible two-sided p-value is 0.0625.

Across more than two strategies, the Friedman statistic in the F form of
Iman and Davenport (Communications in Statistics 9, 1980), which holds its
level with few blocks where the chi-square approximation does not
(Demšar, JMLR 7, 2006); then Holm's step-down adjustment (Holm, Scand. J.
Statistics 6, 1979) over the pairwise tests.
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


def fold_sizes(per_fold) -> tuple[float, float]:
    """``n_train`` and ``n_test`` of the corrected t-test from a per-fold table (``evaluate``'s ``folds.csv``).

    ``n_train`` is the mean over folds of the images each classifier learned
    from, the smaller of the classifiers' where they differ (the larger
    correction, so the more cautious test).
    """
    n_train = per_fold.groupby("classifier")["n_train"].mean().min()
    return float(n_train), float(per_fold["n_test"].mean())


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


def iman_davenport_p(scores: np.ndarray) -> float:
    """Do strategies differ at all?  Friedman's test in Iman and Davenport's F form over (blocks x strategies).

    Blocks are the folds (of every repeat).  ``F = (N-1) chi2 / (N (k-1) - chi2)``
    on ``k-1`` and ``(k-1)(N-1)`` degrees of freedom, with Friedman's
    tie-corrected ``chi2``.  NaN with fewer than three strategies or when
    every score ties within every block.
    """
    scores = np.asarray(scores, dtype=float)
    n, k = scores.shape
    if k < 3 or n < 2 or np.all(scores == scores[:, :1]):
        return math.nan
    chi2 = float(stats.friedmanchisquare(*scores.T).statistic)
    denominator = n * (k - 1) - chi2
    if denominator <= 0:                       # every block ranks the strategies the same way
        return 0.0
    f = (n - 1) * chi2 / denominator
    return float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))


def best_against_rest(scores: np.ndarray, names: list, n_train: float, n_test: float) -> dict:
    """The best of several strategies scored on the same folds, tested as a selection.

    ``scores`` is (folds x strategies).  The best strategy is the highest mean;
    picking it and then testing it against the runner-up alone would ignore that
    it was picked.  So: the Iman-Davenport test across all strategies (folds as
    blocks), and the corrected repeated-CV t-test of the best against *every*
    other strategy with Holm's adjustment over those comparisons.  The best is
    supported when the Iman-Davenport p and every adjusted p are below 0.05.
    """
    scores = np.asarray(scores, dtype=float)
    means = scores.mean(axis=0)
    best = int(np.argmax(means))
    others = [j for j in np.argsort(-means) if j != best]
    tests = [corrected_resampled_t(scores[:, best] - scores[:, j], n_train, n_test) for j in others]
    adjusted = holm_adjusted([t["p_value_t"] for t in tests])
    comparisons = [{"against": names[j], **t, "p_value_holm": a} for j, t, a in zip(others, tests, adjusted)]
    overall = iman_davenport_p(scores)
    # NaN (no test possible) compares False, so it never counts as support.
    supported = (len(names) < 3 or overall < 0.05) and all(c["p_value_holm"] < 0.05 for c in comparisons)
    return {"best": names[best], "iman_davenport_p": overall, "comparisons": comparisons,
            "supported": bool(supported)}


def format_p(p: float) -> str:
    """A p-value for a table: three decimals, or 'n/a' where no test could be made."""
    return "n/a" if math.isnan(p) else f"{p:.3f}"


def compare_classifiers(per_fold, metric: str, *, better: str = "svm", baseline: str = "dense") -> dict:
    """``better`` minus ``baseline`` on ``metric``, paired by split, by the corrected repeated k-fold t-test.

    ``per_fold`` is ``evaluate``'s ``folds.csv`` (one row per classifier and
    split).  Splits where either value is undefined are left out and counted
    (``splits_left_out``).
    """
    def by_split(name: str):
        return per_fold[per_fold["classifier"] == name].set_index("split").sort_index()[metric]

    a, b = by_split(better), by_split(baseline)
    d = (a - b).dropna()
    n_train, n_test = fold_sizes(per_fold)
    result = compare_paired(a.loc[d.index].to_numpy(), b.loc[d.index].to_numpy(), n_train, n_test)
    return {**result, "splits": int(len(d)), "splits_left_out": int(len(a) - len(d)), "n_train": n_train,
            "n_test": n_test}
