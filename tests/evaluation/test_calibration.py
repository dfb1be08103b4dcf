import numpy as np
import pytest

from ultrasound_transfer.evaluation.calibration import brier_score, expected_calibration_error, reliability_table


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
