import numpy as np
import pytest

from benchmarks.intervals import gap_ends, gap_predictions, largest_difference, main, pooled_predictions
from ultrasound_transfer.evaluation.external_validation import resampled_gap_intervals, split_by_split_gap
from ultrasound_transfer.evaluation.intervals import counted_intervals, resampled_intervals

FEW = dict(calibration_bins=10, resamples=100, level=0.95, seed=1)


@pytest.mark.parametrize("classes", [2, 3])
def test_both_ways_give_the_same_intervals_on_the_benchmarks_predictions(classes):
    pooled = pooled_predictions(40, 2, 2, classes)
    assert set(pooled) == {"dense", "svm"} and pooled["svm"].probabilities.shape == (80, classes)
    assert set(np.unique(pooled["svm"].labels)) == set(range(classes))
    assert largest_difference(counted_intervals(pooled, **FEW), resampled_intervals(pooled, **FEW)) < 1e-9


def test_both_ways_give_the_same_gap_intervals_on_the_benchmarks_splits():
    source, splits, readings = gap_predictions()
    assert len(np.unique(splits)) == len(readings) == 15 and len(readings[0].labels) == 1875
    counted = gap_ends(split_by_split_gap(source, splits, readings, **FEW))
    assert largest_difference(counted, resampled_gap_intervals(source, splits, readings, **FEW)) < 1e-9


def test_a_differing_nan_end_or_figure_is_reported_not_hidden():
    pooled = pooled_predictions(40, 2, 1)
    counted, resampled = counted_intervals(pooled, **FEW), resampled_intervals(pooled, **FEW)
    with pytest.raises(AssertionError, match="svm.roc_auc low"):
        largest_difference(counted | {"svm.roc_auc": (np.nan, counted["svm.roc_auc"][1])}, resampled)
    with pytest.raises(AssertionError, match="other figures"):
        largest_difference({k: v for k, v in counted.items() if k != "svm.brier"}, resampled)


def test_no_rounds_is_refused():
    with pytest.raises(SystemExit):
        main(["--rounds", "0"])
