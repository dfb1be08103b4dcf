import numpy as np
import pytest

from ultrasound_transfer.evaluation.calibration import (
    brier_score,
    calibration_intercept_slope,
    debiased_calibration_error,
    expected_calibration_error,
    reliability_table,
    wilson_interval,
)


def test_brier_is_the_mean_squared_gap_and_prevalence_scores_its_known_value():
    labels = np.array([1, 0, 0, 0])
    assert brier_score(labels, np.array([1.0, 0.0, 0.0, 0.0])) == 0.0
    assert brier_score(labels, np.full(4, 0.25)) == pytest.approx(0.25 * 0.75)


def test_ece_is_zero_for_calibrated_bins_and_the_gap_otherwise():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    calibrated = (rng.random(200_000) < p).astype(int)
    assert expected_calibration_error(calibrated, p, 10) < 0.01
    overconfident = np.where(p > 0.5, 1.0, 0.0)         # says 0 or 1 where the truth is p
    assert expected_calibration_error(calibrated, overconfident, 10) == pytest.approx(0.25, abs=0.01)


def test_reliability_table_matches_the_ece():
    rng = np.random.default_rng(1)
    p, labels = rng.random(500), rng.integers(0, 2, 500)
    table = reliability_table(labels, p, 5)
    assert table["count"].sum() == 500 and len(table) == 5
    gap = np.sum(np.abs(table["mean_predicted"] - table["observed_fraction"]) * table["count"]) / 500
    assert gap == pytest.approx(expected_calibration_error(labels, p, 5))


def calibrated_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and outcomes drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    probability = 1 / (1 + np.exp(-rng.normal(0, 1.5, n)))
    return (rng.uniform(size=n) < probability).astype(int), probability


def test_a_calibrated_sample_has_intercept_0_slope_1_and_a_debiased_error_near_0():
    labels, probability = calibrated_sample(20000, 1)
    intercept, slope = calibration_intercept_slope(labels, probability)
    assert abs(intercept) < 0.05 and abs(slope - 1) < 0.05
    assert debiased_calibration_error(labels, probability, 10) < 0.02
    assert expected_calibration_error(labels, probability, 10) < 0.03


def test_planted_miscalibration_is_read_in_its_direction():
    labels, probability = calibrated_sample(20000, 2)
    z = np.log(probability) - np.log1p(-probability)
    too_extreme = 1 / (1 + np.exp(-2 * z))             # twice the log-odds: slope 1/2
    too_high = 1 / (1 + np.exp(-(z + 1)))              # one unit too high: intercept -1
    assert calibration_intercept_slope(labels, too_extreme)[1] == pytest.approx(0.5, abs=0.05)
    assert calibration_intercept_slope(labels, too_high)[0] == pytest.approx(-1.0, abs=0.07)
    assert debiased_calibration_error(labels, too_high, 10) > 0.1


def test_on_few_images_the_debiased_error_is_smaller_than_the_binned_one_which_chance_inflates():
    binned, debiased = [], []
    for seed in range(200):
        labels, probability = calibrated_sample(120, 10 + seed)
        binned.append(expected_calibration_error(labels, probability, 10))
        debiased.append(debiased_calibration_error(labels, probability, 10))
    assert np.mean(debiased) < 0.6 * np.mean(binned)        # both should be 0: the binned one is far from it


def test_the_reliability_table_gives_each_bin_a_wilson_interval():
    table = reliability_table(np.array([1, 0, 1, 1, 0, 0]), np.array([0.9, 0.1, 0.8, 0.95, 0.2, 0.85]), 2)
    top = table[table["bin_low"] == 0.5].iloc[0]
    assert top["observed_low"] < top["observed_fraction"] < top["observed_high"]
    assert wilson_interval(0, 4)[0] == 0 and 0 < wilson_interval(0, 4)[1] < 1
