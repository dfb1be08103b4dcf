import numpy as np
import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.evaluation.operating_points import choose_threshold, fit_platt, rates_at

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SCORES = np.array([0.1, 0.2, 0.35, 0.6, 0.4, 0.7, 0.8, 0.9])


def test_youden_maximizes_sensitivity_plus_specificity_and_does_not_sit_on_a_score():
    t = choose_threshold(LABELS, SCORES, rule="youden", target=0.9)
    sensitivity, specificity = rates_at(LABELS, SCORES, np.array([t]))
    grid = np.linspace(0, 1, 1001)
    best = np.max(np.sum(rates_at(LABELS, SCORES, grid), axis=0))
    assert sensitivity[0] + specificity[0] == pytest.approx(best)
    assert t not in SCORES


def test_sensitivity_and_specificity_rules_reach_their_target_on_the_given_images():
    t = choose_threshold(LABELS, SCORES, rule="sensitivity", target=1.0)
    assert rates_at(LABELS, SCORES, np.array([t]))[0][0] == 1.0 and 0.35 < t < 0.4   # the highest that keeps all
    t = choose_threshold(LABELS, SCORES, rule="specificity", target=1.0)
    assert rates_at(LABELS, SCORES, np.array([t]))[1][0] == 1.0 and 0.6 < t < 0.7
    assert choose_threshold(LABELS, SCORES, rule="argmax", target=0.9) == 0.5


def test_one_class_validation_images_are_refused():
    with pytest.raises(PipelineError, match="both classes"):
        choose_threshold(np.ones(4, int), SCORES[:4], rule="youden", target=0.9)


def test_platt_scaling_recovers_a_known_sigmoid_and_keeps_the_ranking():
    rng = np.random.default_rng(0)
    decision = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-(1.5 * decision - 0.5)))).astype(int)
    platt = fit_platt(decision, labels)
    assert platt.a == pytest.approx(-1.5, abs=0.15) and platt.b == pytest.approx(0.5, abs=0.15)
    # Calibration images that happen to rank backwards cannot reverse the SVM's ranking.
    backwards = fit_platt(np.array([-1.0, -0.5, 0.5, 1.0]), np.array([1, 1, 0, 0]))
    p = backwards.probability(np.array([-2.0, 0.0, 2.0]))
    assert p[0] < p[1] < p[2]             # nor flatten it into ties


def test_separable_calibration_images_give_finite_probabilities():
    platt = fit_platt(np.array([-3.0, -2.0, 2.0, 3.0]), np.array([0, 0, 1, 1]))
    p = platt.probability(np.array([-100.0, 0.0, 100.0]))
    assert np.all(np.isfinite(p)) and p[0] < 0.5 < p[2]
