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

Across more than two strategies: the best against every other by the
corrected test, with Holm's step-down adjustment (Holm, Scand. J.
Statistics 6, 1979) over every such test of the family reported together;
the Friedman statistic in the F form of Iman and Davenport (Communications
in Statistics 9, 1980) is given beside, as description, since with folds as
blocks (which share training data) its p-value is anti-conservative.
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


def detectable_difference(sd: float, *, k: int, n_train: float, n_test: float, power: float = 0.8,
                          confidence: float = 0.95) -> float:
    """The smallest true mean difference the corrected test detects with probability ``power`` (two-sided).

    With per-split differences of standard deviation ``sd`` over ``k`` splits,
    the test's standard error is ``sqrt(1/k + n_test/n_train) * sd``; the
    difference ``delta`` whose noncentral t (``k - 1`` degrees of freedom,
    noncentrality ``delta / se``) exceeds the critical value with probability
    ``power`` is found by root-finding (Cohen, Statistical Power Analysis,
    1988, in its exact noncentral-t form).  A design sensitivity: what the
    design could have shown, from its observed spread, not a power computed
    from the observed effect.  NaN with fewer than two splits or no spread.
    """
    if k < 2 or not np.isfinite(sd) or sd <= 0:
        return math.nan
    from scipy.optimize import brentq

    se = math.sqrt(1 / k + n_test / n_train) * sd
    df, critical = k - 1, float(stats.t.ppf(0.5 + confidence / 2, k - 1))

    def shortfall(noncentrality: float) -> float:
        detected = stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)
        return float(detected - power)

    upper = 1.0
    while shortfall(upper) < 0:            # power rises with the noncentrality: bracket the root by doubling
        upper *= 2
    return float(brentq(shortfall, 0.0, upper) * se)


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
    """``a - b`` per fold: mean, 95 % corrected-t interval, t and Wilcoxon p-values, and the difference the
    design detects at 80 % power (:func:`detectable_difference`)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    return {**corrected_resampled_t(d, n_train, n_test), "p_value_wilcoxon": wilcoxon_p(d),
            "detectable_80": detectable_difference(sd, k=len(d), n_train=n_train, n_test=n_test)}


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


def best_against_rest(scores: np.ndarray, names: list, n_train: float, n_test: float, *,
                      higher_is_better: bool = True) -> dict:
    """The best of several strategies scored on the same folds, and its advantage over each of the others.

    ``scores`` is (folds x strategies).  The best strategy is the highest mean,
    or the lowest for a metric where lower is better (``higher_is_better``:
    Brier, ECE).  Picking it and then testing it against the runner-up alone
    would ignore that it was picked; so it is tested against *every* other
    strategy by the corrected repeated-CV t-test on the per-fold advantage
    (positive: the best is better), and the caller adjusts these p-values over
    the whole family of selections it reports (:func:`supported_selections`).

    The Iman-Davenport statistic across all strategies is given beside, as
    description only: it takes the folds as independent blocks, but folds
    share their training images, so its p-value is anti-conservative (Demšar,
    JMLR 7, 2006, uses datasets as blocks); the verdict rests on the
    corrected tests alone.
    """
    oriented = np.asarray(scores, dtype=float) * (1 if higher_is_better else -1)
    means = oriented.mean(axis=0)
    best = int(np.argmax(means))
    others = [j for j in np.argsort(-means) if j != best]
    comparisons = [{"against": names[j], **corrected_resampled_t(oriented[:, best] - oriented[:, j], n_train,
                                                                 n_test)} for j in others]
    return {"best": names[best], "iman_davenport_p": iman_davenport_p(np.asarray(scores, dtype=float)),
            "comparisons": comparisons, "higher_is_better": higher_is_better}


def supported_selections(selections: list[dict]) -> list[dict]:
    """Holm's adjustment over every comparison of every selection (the family: all networks x datasets
    reported together); a selection is supported when each of its comparisons stays below 0.05 after it.
    Adds ``p_value_holm`` to each comparison and ``supported`` to each selection, in place; returns them."""
    family = [c for s in selections for c in s["comparisons"]]
    for comparison, adjusted in zip(family, holm_adjusted([c["p_value_t"] for c in family])):
        comparison["p_value_holm"] = adjusted
    for selection in selections:
        # NaN (no test possible) compares False, so it never counts as support.
        selection["supported"] = bool(selection["comparisons"]) and all(
            c["p_value_holm"] < 0.05 for c in selection["comparisons"])
    return selections


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
