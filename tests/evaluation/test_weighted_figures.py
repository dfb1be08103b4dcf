import numpy as np
import pytest

from ultrasound_transfer.evaluation.calibration import debiased_calibration_error
from ultrasound_transfer.evaluation.intervals import (
    COUNTS,
    PooledPredictions,
    counted_intervals,
    group_resamples,
    headline_of,
    headline_with_intervals,
    resample_weights,
    resampled_intervals,
)
from ultrasound_transfer.evaluation.weighted_figures import weighted_headline, weighted_multiclass_headline

# Figures made only of whole counts (and, for the AUC, halves): the same bits either way.
EXACT = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "tp", "fp", "tn", "fn",
         "roc_auc")


def predictions(rng, images=60, repeats=1, ties=True):
    """Two-class pooled predictions of patients with 1-4 images, probabilities with ties and 0/1 extremes,
    per-fold thresholds."""
    sizes = rng.integers(1, 5, images)
    groups = np.repeat(np.arange(images), sizes)[:images]
    labels = (rng.random(len(np.unique(groups))) < 0.4)[np.searchsorted(np.unique(groups), groups)].astype(int)
    n = len(groups)
    probability = np.concatenate([np.clip(0.5 + 0.3 * (labels - 0.5) + 0.3 * rng.normal(size=n), 0, 1)
                                  for _ in range(repeats)])
    if ties:
        probability = np.round(probability, 1)          # many ties, with both outcomes at one probability
    return PooledPredictions(labels=np.tile(labels, repeats),
                             probabilities=np.column_stack([1 - probability, probability]),
                             thresholds=rng.choice([0.4, 0.5, 0.6], n * repeats),
                             repeats=np.repeat(np.arange(repeats), n), groups=np.tile(groups, repeats))


def assert_same_figures(weighted: dict[str, np.ndarray], per_resample: list[dict[str, float]]):
    assert set(weighted) == set(per_resample[0])
    for name, values in weighted.items():
        expected = np.array([d[name] for d in per_resample], dtype=float)
        np.testing.assert_array_equal(np.isnan(values), np.isnan(expected), err_msg=name)
        if name in EXACT:
            np.testing.assert_array_equal(values, expected, err_msg=name)
        elif name == "calibration_error_debiased":     # a root: near 0 it magnifies rounding, so compare squares
            np.testing.assert_allclose(values ** 2, expected ** 2, rtol=1e-9, atol=1e-13, err_msg=name)
        else:
            np.testing.assert_allclose(values, expected, rtol=1e-9, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("seed", range(4))
def test_each_figure_of_every_resample_is_the_per_resample_functions_value(seed):
    rng = np.random.default_rng(seed)
    pooled = predictions(rng, images=20 + 20 * seed)
    weights = resample_weights(pooled.groups, resamples=200, seed=seed)
    per_resample = [headline_of(pooled, rows, 10) for rows in group_resamples(pooled.groups, resamples=200, seed=seed)]
    assert_same_figures(weighted_headline(weights, pooled.labels, pooled.probabilities[:, 1], pooled.thresholds, 10),
                        per_resample)


def test_resamples_missing_a_class_give_nan_where_the_per_resample_functions_do():
    rng = np.random.default_rng(9)
    pooled = predictions(rng, images=6)             # a few patients: some resamples hold one class only
    rows = group_resamples(pooled.groups, resamples=300, seed=1)
    per_resample = [headline_of(pooled, r, 10) for r in rows]
    assert any(np.isnan(d["roc_auc"]) for d in per_resample)
    weights = resample_weights(pooled.groups, resamples=300, seed=1)
    assert_same_figures(weighted_headline(weights, pooled.labels, pooled.probabilities[:, 1], pooled.thresholds, 10),
                        per_resample)


def test_weights_count_the_rows_of_the_same_resamples():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    weights = resample_weights(groups, resamples=30, seed=4)
    for row_weights, rows in zip(weights, group_resamples(groups, resamples=30, seed=4)):
        np.testing.assert_array_equal(row_weights, np.bincount(rows, minlength=len(groups)))


def test_the_debiased_error_does_not_depend_on_the_order_of_tied_images():
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1, 1, 0])
    probability = np.array([0.2, 0.2, 0.2, 0.5, 0.5, 0.5, 0.8, 0.8, 0.3, 0.3])
    reference = debiased_calibration_error(labels, probability, 3)
    for permutation in np.random.default_rng(0).permuted(np.tile(np.arange(10), (20, 1)), axis=1):
        assert debiased_calibration_error(labels[permutation], probability[permutation], 3) == pytest.approx(
            reference, rel=1e-12, abs=1e-15)


def test_intervals_from_the_weights_are_those_of_the_resampled_rows_with_repeats_and_two_classifiers():
    rng = np.random.default_rng(5)
    dense, svm = predictions(rng, images=40, repeats=3), predictions(rng, images=40, repeats=3)
    svm = PooledPredictions(labels=dense.labels, probabilities=svm.probabilities, thresholds=svm.thresholds,
                            repeats=dense.repeats, groups=dense.groups)
    by_classifier = {"dense": dense, "svm": svm}
    options = dict(calibration_bins=10, resamples=300, level=0.95, seed=2)
    result = headline_with_intervals(by_classifier, **options)
    expected = resampled_intervals(by_classifier, **options)
    compared = 0
    for key, (low, high) in expected.items():
        owner, name = key.split(".")
        if name in COUNTS:
            continue
        section = result["svm_minus_dense" if owner == "difference" else owner]
        assert section[f"{name}_ci_low"] == pytest.approx(low, rel=1e-9, abs=1e-11, nan_ok=True), key
        assert section[f"{name}_ci_high"] == pytest.approx(high, rel=1e-9, abs=1e-11, nan_ok=True), key
        compared += 1
    assert compared == 3 * 13            # 13 figures with an interval, of dense, svm and their difference


def three_classes(rng, images=60, repeats=1):
    """Pooled predictions of three classes, patients of 1-3 images, rounded probabilities (ties, and ties
    of the largest column)."""
    groups = np.repeat(np.arange(images), rng.integers(1, 4, images))[:images]
    labels = rng.integers(0, 3, groups.max() + 1)[groups]
    scores = np.concatenate([np.eye(3)[labels] + rng.normal(0, 0.8, (images, 3)) for _ in range(repeats)])
    probabilities = np.round(np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True), 1)
    return PooledPredictions(labels=np.tile(labels, repeats), probabilities=probabilities,
                             thresholds=np.full(images * repeats, np.nan),
                             repeats=np.repeat(np.arange(repeats), images), groups=np.tile(groups, repeats))


@pytest.mark.parametrize("images", [8, 50])
def test_three_class_figures_of_every_resample_are_the_per_resample_functions_values(images):
    rng = np.random.default_rng(images)
    pooled = three_classes(rng, images=images)          # 8 images: many resamples lack a class
    weights = resample_weights(pooled.groups, resamples=300, seed=3)
    per_resample = [headline_of(pooled, rows, 10) for rows in group_resamples(pooled.groups, resamples=300, seed=3)]
    weighted = weighted_multiclass_headline(weights, pooled.labels, pooled.probabilities)
    assert set(weighted) == set(per_resample[0])
    for name, values in weighted.items():
        expected = np.array([d[name] for d in per_resample], dtype=float)
        np.testing.assert_array_equal(np.isnan(values), np.isnan(expected), err_msg=name)
        np.testing.assert_allclose(values, expected, rtol=1e-12, err_msg=name)
    assert np.isnan(weighted["roc_auc"]).any() == (images == 8)


def test_three_class_intervals_with_repeats_are_those_of_the_resampled_rows():
    rng = np.random.default_rng(11)
    first, second = three_classes(rng, images=40, repeats=2), three_classes(rng, images=40, repeats=2)
    by_classifier = {"dense": first, "svm": PooledPredictions(
        labels=first.labels, probabilities=second.probabilities, thresholds=first.thresholds, repeats=first.repeats,
        groups=first.groups)}
    options = dict(calibration_bins=10, resamples=300, level=0.95, seed=4)
    counted, resampled = counted_intervals(by_classifier, **options), resampled_intervals(by_classifier, **options)
    assert set(counted) == set(resampled) and len(counted) == 3 * 3
    for key, ends in resampled.items():
        np.testing.assert_allclose(counted[key], ends, rtol=1e-12, atol=1e-15, err_msg=key)
