import math

import numpy as np
import pytest
from scipy import stats

from ultrasound_transfer.evaluation.statistics import (
    best_against_rest,
    compare_paired,
    corrected_resampled_t,
    format_p,
    friedman_p,
    holm_adjusted,
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
    assert set(result) == {"mean_diff", "ci_low", "ci_high", "p_value_t", "p_value_wilcoxon"}


def test_mean_fold_sizes():
    from ultrasound_transfer.evaluation.statistics import mean_fold_sizes

    record = {"n_images": 10, "folds": [{"test_indices": [0, 1, 2]}, {"test_indices": [3, 4]}]}
    assert mean_fold_sizes(record) == (7.5, 2.5)


def test_holm_adjustment_matches_its_definition_and_skips_nan():
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm_adjusted([0.02, math.nan, 0.5])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.5)
    assert format_p(math.nan) == "n/a" and format_p(0.0123) == "0.012"


def test_friedman_equals_scipy_and_needs_three_strategies():
    rng = np.random.default_rng(0)
    scores = rng.random((5, 4)) + np.array([0, 0.1, 0.3, 0.05])
    assert friedman_p(scores) == pytest.approx(stats.friedmanchisquare(*scores.T).pvalue)
    assert math.isnan(friedman_p(scores[:, :2])) and math.isnan(friedman_p(np.ones((5, 3))))


def test_best_strategy_is_tested_against_all_others_not_just_the_runner_up():
    folds = np.array([0.0, 0.01, -0.01, 0.02, -0.02])
    clear = np.stack([0.60 + folds, 0.70 + folds, 0.90 + folds[::-1], 0.65 + folds], axis=1)
    result = best_against_rest(clear, [0, 0.15, 0.5, 1], 80, 20)
    assert result["best"] == 0.5 and [c["against"] for c in result["comparisons"]] == [0.15, 1, 0]
    assert result["supported"]
    raw = [c["p_value_t"] for c in result["comparisons"]]
    assert [c["p_value_holm"] for c in result["comparisons"]] == pytest.approx(holm_adjusted(raw))
    # A best that beats the runner-up only by noise is not supported, however the others fare.
    close = clear.copy()
    close[:, 1] = clear[:, 2] - 0.005 + 0.03 * np.array([1, -1, 1, -1, 0])
    assert not best_against_rest(close, [0, 0.15, 0.5, 1], 80, 20)["supported"]
