"""Case-level reading: a case's score from its images, read at an operating point chosen on validation cases."""

import numpy as np
import pytest

from ultrasound_transfer.evaluation.cases import case_predictions, case_scores, case_threshold
from ultrasound_transfer.evaluation.intervals import PooledPredictions
from ultrasound_transfer.settings import EvaluationSettings


def validation_cases(seed: int, n_cases: int = 200, views: int = 4):
    """Cases of several views: malignant ones score higher on average, every view noisy."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n_cases) % 2
    labels = np.repeat(truth, views)
    scores = 1 / (1 + np.exp(-(np.repeat(truth, views) * 1.5 - 0.75 + rng.normal(0, 1.2, len(labels)))))
    return labels, scores, np.repeat([f"c{i}" for i in range(n_cases)], views)


def test_a_case_of_max_scores_is_read_at_its_own_higher_threshold_not_the_images():
    """The maximum of four views is higher than one view's score: an image threshold would call too many cases
    malignant; the threshold chosen on validation cases, scored the same way, does not."""
    labels, scores, units = validation_cases(1)
    rule = EvaluationSettings(operating_point="youden", case_score="max")
    image_threshold = case_threshold(labels, scores, units=np.arange(len(labels)).astype(str), evaluation=rule,
                                     argmax_threshold=0.5)
    by_case = case_threshold(labels, scores, units=units, evaluation=rule, argmax_threshold=0.5)
    assert by_case > image_threshold + 0.1
    test_labels, test_scores, test_units = validation_cases(2)
    case_labels, case_values = case_scores(test_labels, test_scores, units=test_units, score="max")
    benign = case_labels == 0
    specificity_at = {name: float(np.mean(case_values[benign] < t)) for name, t in
                      (("image", image_threshold), ("case", by_case))}
    assert specificity_at["case"] > specificity_at["image"] + 0.2


def test_under_argmax_the_case_threshold_is_the_image_one_and_a_mixed_case_is_left_out():
    labels, scores, units = validation_cases(3)
    assert case_threshold(labels, scores, units=units, evaluation=EvaluationSettings(operating_point="argmax"),
                          argmax_threshold=0.42) == 0.42
    labels[0] = 1 - labels[0]                                  # case c0 now holds two labels
    case_labels, _ = case_scores(labels, scores, units=units, score="mean")
    assert len(case_labels) == 199


def test_case_predictions_count_a_unit_once_with_its_near_copies():
    """Units are cases joined with their near-copies: two ids of one unit make one case-level row."""
    pooled = PooledPredictions(labels=np.array([1, 1, 1, 0]), probabilities=np.column_stack(
        [1 - np.array([0.9, 0.7, 0.8, 0.2]), [0.9, 0.7, 0.8, 0.2]]), thresholds=np.full(4, 0.5),
        repeats=np.ones(4, int), groups=np.array(["g1", "g1", "g1", "g2"]))
    rows, mixed = case_predictions(pooled, cases=np.array(["g1", "g1", "g1", "g2"]), score="mean")
    assert len(rows.labels) == 2 and mixed == 0
    assert rows.probabilities[:, 1].tolist() == pytest.approx([0.8, 0.2])
