import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ultrasound_transfer.evaluation.statistics import (
    best_against_rest,
    compare_paired,
    corrected_resampled_t,
    detectable_difference,
    fold_sizes,
    format_p,
    holm_adjusted,
    iman_davenport_p,
    supported_selections,
    wilcoxon_p,
)


def test_without_correction_it_is_the_one_sample_t_test():
    d = np.array([0.05, 0.02, 0.08, -0.01, 0.04])
    ours = corrected_resampled_t(d, n_train=100, n_test=0)
    scipy_test = stats.ttest_1samp(d, 0.0)
    assert ours["p_value_t"] == pytest.approx(scipy_test.pvalue)
    low, high = scipy_test.confidence_interval(0.95)
    assert (ours["ci_low"], ours["ci_high"]) == (pytest.approx(low), pytest.approx(high))


def test_correction_widens_the_interval_as_nadeau_bengio_prescribe():
    d = np.array([0.05, 0.02, 0.08, -0.01, 0.04])
    ours = corrected_resampled_t(d, n_train=80, n_test=20)
    se = math.sqrt((1 / 5 + 20 / 80) * d.var(ddof=1))
    assert ours["ci_high"] - ours["mean_diff"] == pytest.approx(stats.t.ppf(0.975, 4) * se)
    assert ours["p_value_t"] == pytest.approx(2 * stats.t.sf(d.mean() / se, 4))
    plain = corrected_resampled_t(d, n_train=80, n_test=0)
    assert ours["p_value_t"] > plain["p_value_t"] and ours["ci_low"] < plain["ci_low"]


def test_wilcoxon_equals_scipy_and_handles_all_zero():
    d = np.array([0.05, 0.02, 0.08, -0.01, 0.04, 0.03])
    assert wilcoxon_p(d) == pytest.approx(stats.wilcoxon(d).pvalue)
    assert wilcoxon_p(np.zeros(5)) == 1.0
    assert wilcoxon_p(np.full(5, 0.1)) == pytest.approx(0.0625)   # the floor with 5 folds


def test_constant_differences_claim_no_p_value_and_paired_helper():
    same = corrected_resampled_t(np.full(5, 0.1), 80, 20)
    assert same["ci_low"] == same["ci_high"] == pytest.approx(0.1)
    assert math.isnan(same["p_value_t"]) and "all 5 fold differences equal" in same["note"]
    result = compare_paired([0.9, 0.8, 0.85], [0.7, 0.8, 0.75], 80, 20)
    assert result["mean_diff"] == pytest.approx(0.1)
    assert set(result) == {"mean_diff", "ci_low", "ci_high", "p_value_t", "p_value_wilcoxon", "detectable_80"}


def test_fold_sizes_take_the_images_each_classifier_learned_from_the_smaller_if_they_differ():
    per_fold = pd.DataFrame({"classifier": ["dense", "svm"] * 2, "n_train": [80, 100, 82, 102],
                             "n_test": [24, 24, 26, 26]})
    assert fold_sizes(per_fold) == (81.0, 25.0)


def test_repeated_cv_t_is_bouckaert_and_franks_definition():
    # 3 repeats x 5 folds: the k*r differences, variance (1/(k r) + n2/n1) s^2, k r - 1 degrees of freedom.
    rng = np.random.default_rng(1)
    d = rng.normal(0.02, 0.03, 15)
    n_train, n_test = 80.0, 24.0
    se = math.sqrt((1 / 15 + n_test / n_train) * d.var(ddof=1))
    expected_p = 2 * stats.t.sf(abs(d.mean() / se), 14)
    ours = corrected_resampled_t(d, n_train=n_train, n_test=n_test)
    assert ours["p_value_t"] == pytest.approx(expected_p)
    assert ours["ci_high"] - ours["mean_diff"] == pytest.approx(stats.t.ppf(0.975, 14) * se)


def test_holm_adjustment_matches_its_definition_and_skips_nan():
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm_adjusted([0.02, math.nan, 0.5])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.5)
    assert format_p(math.nan) == "n/a" and format_p(0.0123) == "0.012"


def test_iman_davenport_matches_its_definition_and_needs_three_strategies():
    rng = np.random.default_rng(0)
    scores = rng.random((5, 4)) + np.array([0, 0.1, 0.3, 0.05])
    ranks = np.apply_along_axis(stats.rankdata, 1, scores)
    n, k = scores.shape
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(ranks.mean(axis=0) ** 2) - k * (k + 1) ** 2 / 4)
    f = (n - 1) * chi2 / (n * (k - 1) - chi2)
    assert iman_davenport_p(scores) == pytest.approx(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))
    # With 5 blocks it is less conservative than the chi-square approximation it replaces.
    assert iman_davenport_p(scores) < stats.friedmanchisquare(*scores.T).pvalue
    assert math.isnan(iman_davenport_p(scores[:, :2])) and math.isnan(iman_davenport_p(np.ones((5, 3))))
    assert iman_davenport_p(np.tile([0.1, 0.2, 0.3], (5, 1))) == 0.0      # every block ranks them alike


def test_best_strategy_is_tested_against_all_others_not_just_the_runner_up():
    folds = np.array([0.0, 0.01, -0.01, 0.02, -0.02])
    clear = np.stack([0.60 + folds, 0.70 + folds, 0.90 + folds[::-1], 0.65 + folds], axis=1)
    (result,) = supported_selections([best_against_rest(clear, [0, 0.15, 0.5, 1], 80, 20)])
    assert result["best"] == 0.5 and [c["against"] for c in result["comparisons"]] == [0.15, 1, 0]
    assert result["supported"]
    raw = [c["p_value_t"] for c in result["comparisons"]]
    assert [c["p_value_holm"] for c in result["comparisons"]] == pytest.approx(holm_adjusted(raw))
    # A best that beats the runner-up only by noise is not supported, however the others fare.
    close = clear.copy()
    close[:, 1] = clear[:, 2] - 0.005 + 0.03 * np.array([1, -1, 1, -1, 0])
    assert not supported_selections([best_against_rest(close, [0, 0.15, 0.5, 1], 80, 20)])[0]["supported"]


def test_selections_are_adjusted_as_one_family_so_more_of_them_ask_more_of_each():
    folds = np.array([0.0, 0.012, -0.01, 0.02, -0.021])
    scores = np.stack([0.70 + folds, 0.745 + folds[::-1]], axis=1)
    alone = supported_selections([best_against_rest(scores, [0, 1], 80, 20)])[0]
    family = supported_selections([best_against_rest(scores, [0, 1], 80, 20) for _ in range(10)])
    p_alone = alone["comparisons"][0]["p_value_holm"]
    assert alone["supported"] and p_alone < 0.05
    assert family[0]["comparisons"][0]["p_value_holm"] == pytest.approx(min(1.0, 10 * p_alone))
    assert not any(s["supported"] for s in family)


def test_where_lower_is_better_the_best_is_the_lowest_and_its_advantage_positive():
    folds = np.array([0.0, 0.01, -0.01, 0.02, -0.02])
    brier = np.stack([0.20 + folds, 0.12 + folds, 0.25 + folds], axis=1)
    result = best_against_rest(brier, ["a", "b", "c"], 80, 20, higher_is_better=False)
    assert result["best"] == "b" and result["comparisons"][0]["against"] == "a"
    assert result["comparisons"][0]["mean_diff"] == pytest.approx(0.08)


def test_the_detectable_difference_is_what_the_corrected_test_detects_four_times_in_five():
    """A simulation under Nadeau and Bengio's model (split differences equicorrelated with rho = n_test /
    (n_train + n_test), the correlation their correction assumes): the test holds its level, and at the detectable
    difference computed from the spread the test sees it rejects 80 % of the time."""
    rng = np.random.default_rng(5)
    k, n_train, n_test, sd = 5, 80.0, 24.0, 0.08
    rho = n_test / (n_train + n_test)
    draw = np.linalg.cholesky(sd**2 * (rho * np.ones((k, k)) + (1 - rho) * np.eye(k)))
    detectable = detectable_difference(np.sqrt(1 - rho) * sd, k=k, n_train=n_train, n_test=n_test)
    runs = 4000
    power = np.mean([corrected_resampled_t(detectable + draw @ rng.normal(size=k), n_train, n_test)["p_value_t"]
                     < 0.05 for _ in range(runs)])
    level = np.mean([corrected_resampled_t(draw @ rng.normal(size=k), n_train, n_test)["p_value_t"] < 0.05
                     for _ in range(runs)])
    assert abs(power - 0.8) < 0.03 and abs(level - 0.05) < 0.015
    assert math.isnan(detectable_difference(0.0, k=k, n_train=n_train, n_test=n_test))     # no spread, no design
    assert detectable_difference(0.02, k=15, n_train=n_train, n_test=n_test) < detectable_difference(
        0.02, k=5, n_train=n_train, n_test=n_test)        # more splits, a finer design
