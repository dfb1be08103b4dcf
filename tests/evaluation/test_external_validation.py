import numpy as np
import pytest

from ultrasound_transfer.evaluation.external_validation import (
    GAP_FIGURES,
    gap_figures,
    resampled_gap_intervals,
    split_by_split_gap,
)
from ultrasound_transfer.evaluation.intervals import PooledPredictions, group_resamples


def test_the_split_by_split_gap_is_the_mean_of_the_splits_differences_with_an_interval_around_it():
    rng = np.random.default_rng(7)
    n_in, n_out, splits = 90, 60, 3
    internal_labels = np.arange(n_in) % 2
    internal = PooledPredictions(labels=internal_labels, probabilities=np.column_stack(
        [np.zeros(n_in), np.clip(internal_labels * 0.4 + rng.uniform(0, 0.6, n_in), 0, 1)]),
        thresholds=np.full(n_in, 0.5), repeats=np.ones(n_in, int), groups=np.repeat(np.arange(n_in // 3), 3))
    internal.probabilities[:, 0] = 1 - internal.probabilities[:, 1]
    split_of = np.repeat(np.arange(1, splits + 1), n_in // splits)
    external_labels = np.arange(n_out) % 2
    external = []
    for _ in range(splits):
        malignant = np.clip(external_labels * 0.2 + rng.uniform(0, 0.8, n_out), 0, 1)
        external.append(PooledPredictions(labels=external_labels, probabilities=np.column_stack(
            [1 - malignant, malignant]), thresholds=np.full(n_out, 0.5), repeats=np.ones(n_out, int),
            groups=np.repeat(np.arange(n_out // 2), 2)))
    gap = split_by_split_gap(internal, split_of, external, calibration_bins=10, resamples=300, level=0.95, seed=1)
    inside = np.mean([gap_figures(internal, np.flatnonzero(split_of == k), 10)["roc_auc"] for k in (1, 2, 3)])
    outside = np.mean([gap_figures(e, np.arange(n_out), 10)["roc_auc"] for e in external])
    assert gap["internal_roc_auc"] == pytest.approx(inside) and gap["external_roc_auc"] == pytest.approx(outside)
    assert gap["external_minus_internal_roc_auc"] == pytest.approx(outside - inside) and outside < inside
    assert gap["external_minus_internal_roc_auc_ci_low"] < gap["external_minus_internal_roc_auc"] \
        < gap["external_minus_internal_roc_auc_ci_high"]


def two_class(labels, malignant, groups, thresholds):
    return PooledPredictions(labels=labels, probabilities=np.column_stack([1 - malignant, malignant]),
                             thresholds=thresholds, repeats=np.ones(len(labels), int), groups=groups)


def test_the_gaps_interval_is_that_of_each_resamples_rows_with_splits_some_resamples_miss():
    rng = np.random.default_rng(3)
    # Source: 8 patients of 1-3 images in 3 splits, one split a single patient (missed by about a third of the
    # resamples); rounded probabilities (ties) and per-split thresholds.  Target: 10 patients of 2 images.
    internal_groups = np.repeat(np.arange(8), [3, 1, 2, 3, 2, 1, 3, 2])
    split_of = np.select([internal_groups == 0, internal_groups < 5], [1, 2], 3)
    internal_labels = (internal_groups % 2).astype(int)
    internal = two_class(internal_labels, np.round(np.clip(0.3 + 0.4 * internal_labels
                                                           + rng.normal(0, 0.25, len(internal_groups)), 0, 1), 1),
                         internal_groups, np.array([0.4, 0.5, 0.6])[split_of - 1])
    external_groups = np.repeat(np.arange(10), 2)
    external_labels = (rng.random(10) < 0.4).astype(int)[external_groups]
    external = [two_class(external_labels, np.round(np.clip(0.4 + 0.2 * external_labels
                                                            + rng.normal(0, 0.3, 20), 0, 1), 1),
                          external_groups, np.full(20, threshold)) for threshold in (0.4, 0.5, 0.6)]
    gap = split_by_split_gap(internal, split_of, external, calibration_bins=5, resamples=400, level=0.9, seed=6)
    expected = resampled_gap_intervals(internal, split_of, external, calibration_bins=5, resamples=400,
                                       level=0.9, seed=6)
    assert any(not np.any(split_of[rows] == 1) for rows in group_resamples(internal.groups, resamples=400, seed=6))
    for figure in GAP_FIGURES:
        np.testing.assert_allclose([gap[f"external_minus_internal_{figure}_ci_low"],
                                    gap[f"external_minus_internal_{figure}_ci_high"]], expected[figure], rtol=1e-12,
                                   atol=1e-15, err_msg=figure)
