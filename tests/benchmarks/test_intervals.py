import numpy as np
import pytest

from benchmarks.intervals import from_counts, largest_difference, main, pooled_predictions, resample_by_resample


def test_both_ways_give_the_same_intervals_on_the_benchmarks_predictions():
    pooled = pooled_predictions(40, 2, 2)
    assert set(pooled) == {"dense", "svm"} and len(pooled["svm"].labels) == 80
    assert largest_difference(from_counts(pooled), resample_by_resample(pooled)) < 1e-9


def test_a_differing_nan_end_is_reported_not_hidden():
    pooled = pooled_predictions(40, 2, 1)
    counted = from_counts(pooled)
    counted["svm"]["roc_auc_ci_low"] = np.nan
    with pytest.raises(AssertionError, match="svm.roc_auc low"):
        largest_difference(counted, resample_by_resample(pooled))


def test_no_rounds_is_refused():
    with pytest.raises(SystemExit):
        main(["--rounds", "0"])
