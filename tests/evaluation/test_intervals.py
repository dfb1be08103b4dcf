import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from ultrasound_transfer.evaluation.intervals import (
    PooledPredictions,
    binary_auc,
    bootstrap_figures,
    group_resamples,
    headline_with_intervals,
    mean_where_defined,
)


def test_auc_is_sklearns():
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 300), rng.normal(size=300).round(1)      # ties included
    assert binary_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(binary_auc(np.ones(5), scores[:5]))


def clustered(rng, groups_per_class=25, images=4, separation=1.0, group_sd=1.0):
    """Scores with a shared effect per patient: images of one patient are not independent."""
    labels = np.repeat([0, 1], groups_per_class * images)
    groups = np.repeat(np.arange(2 * groups_per_class), images)
    effect = rng.normal(0, group_sd, 2 * groups_per_class)[groups]
    scores = separation * labels + effect + rng.normal(0, 0.5, len(labels))
    true_auc = norm.cdf(separation / np.sqrt(2 * (group_sd ** 2 + 0.25)))
    return labels, groups, 1 / (1 + np.exp(-scores)), true_auc


def auc_interval(labels, probability, bootstrap_groups, seed):
    return bootstrap_figures(lambda rows: {"auc": binary_auc(labels[rows], probability[rows])}, bootstrap_groups,
                             resamples=250, level=0.95, seed=seed)["auc"]


def test_the_group_bootstrap_covers_a_known_auc_at_about_the_nominal_rate_and_the_image_bootstrap_does_not():
    rng = np.random.default_rng(2)
    covered_groups = covered_images = 0
    simulations = 120
    for s in range(simulations):
        labels, groups, probability, true_auc = clustered(rng)
        low, high = auc_interval(labels, probability, groups, s)
        covered_groups += low <= true_auc <= high
        low, high = auc_interval(labels, probability, np.arange(len(labels)), s)
        covered_images += low <= true_auc <= high
    assert 0.88 <= covered_groups / simulations <= 0.99
    assert covered_images / simulations < 0.85     # treating views of one patient as independent undercovers


def test_intervals_are_seeded_and_paired_differences_are_given():
    rng = np.random.default_rng(3)
    labels, groups, probability, _ = clustered(rng)
    worse = np.clip(probability + rng.normal(0, 0.3, len(probability)), 0, 1)

    def pooled(p):
        return PooledPredictions(labels=labels, probabilities=np.column_stack([1 - p, p]),
                                 thresholds=np.full(len(labels), 0.5), repeats=np.ones(len(labels), int),
                                 groups=groups)

    run = lambda seed: headline_with_intervals({"dense": pooled(worse), "svm": pooled(probability)},  # noqa: E731
                                               calibration_bins=10, resamples=200, level=0.95, seed=seed)
    first, again, other = run(0), run(0), run(1)
    assert first == again and first != other
    difference = first["svm_minus_dense"]
    assert difference["roc_auc"] == pytest.approx(first["svm"]["roc_auc"] - first["dense"]["roc_auc"])
    assert difference["roc_auc_ci_low"] <= difference["roc_auc"] <= difference["roc_auc_ci_high"]


def test_resamples_draw_whole_groups():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    for rows in group_resamples(groups, resamples=20, seed=0):
        drawn = groups[rows]
        for name, size in (("a", 2), ("c", 3)):
            assert np.sum(drawn == name) % size == 0


def test_a_figure_is_averaged_over_the_parts_that_define_it_and_is_nan_where_none_does():
    # A repeat (or split) lacking a class has no sensitivity: the mean is over the others, silently.
    parts = [{"roc_auc": 0.6, "sensitivity": np.array([0.2, np.nan, 1.0])},
             {"roc_auc": np.nan, "sensitivity": np.array([0.4, np.nan, 0.0])}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean = mean_where_defined(parts)
    assert mean["roc_auc"] == 0.6
    np.testing.assert_allclose(mean["sensitivity"], [0.3, np.nan, 0.5], equal_nan=True)
