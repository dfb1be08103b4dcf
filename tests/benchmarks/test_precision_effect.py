"""The paired comparison of a 16-bit run with the float32 one, on results files made here."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks.precision_effect import inside_the_intervals, paired_rows


def results_files(auc_shift: float, probability_shift: float, *, order_seed: int | None = None) -> dict[str, str]:
    """One network's folds, predictions and headline files; the AUCs and probabilities moved by the shifts, the
    rows in a shuffled order with ``order_seed``."""
    folds = pd.DataFrame([{"classifier": c, "repeat": 1, "fold": k, "split": k, "n_train": 80, "n_test": 20,
                           "roc_auc": 0.8 + 0.02 * k + (auc_shift * k if c == "svm" else 0.0)}
                          for c in ("dense", "svm") for k in range(1, 6)])
    predictions = pd.DataFrame({"id": [f"im{i}" for i in range(10)], "repeat": 1,
                                "dense_prob_benign": np.linspace(0, 1, 10),
                                "dense_prob_malignant": 1 - np.linspace(0, 1, 10),
                                "svm_prob_benign": 0.5 + probability_shift,
                                "svm_prob_malignant": 0.5 - probability_shift,
                                "dense_raw_prob_benign": 0.9 + probability_shift})
    if order_seed is not None:
        folds, predictions = (frame.sample(frac=1, random_state=order_seed) for frame in (folds, predictions))
    headline = {"image": {c: {"roc_auc_ci_low": 0.7, "roc_auc_ci_high": 0.9} for c in ("dense", "svm")}}
    base = "metrics/cv/phantom/VGG16"
    return {f"{base}.folds.csv": folds.to_csv(index=False), f"{base}.predictions.csv": predictions.to_csv(index=False),
            f"{base}.json": json.dumps(headline)}


def test_the_difference_is_paired_by_split_and_the_probability_change_is_the_classifiers_own():
    runs = {"float32": results_files(0.0, 0.0), "16-bit": results_files(0.005, 0.03, order_seed=3)}
    rows = {row["classifier"]: row for row in paired_rows(lambda run, path: runs[run][path], "phantom", "VGG16",
                                                          class_names=["benign", "malignant"])}
    assert rows["dense"]["mean_difference"] == 0.0 and rows["dense"]["largest_probability_change"] == 0.0
    # svm: 0.005 k on split k = 1..5 whatever the order of the rows; the corrected interval (Nadeau & Bengio):
    # variance (1/5 + 20/80) s^2 of the mean, s^2 the differences' sample variance, 4 degrees of freedom
    differences = 0.005 * np.arange(1, 6)
    half = stats.t.ppf(0.975, 4) * np.sqrt((1 / 5 + 20 / 80) * differences.var(ddof=1))
    assert rows["svm"]["mean_difference"] == pytest.approx(0.015)
    assert (rows["svm"]["ci_low"], rows["svm"]["ci_high"]) == pytest.approx((0.015 - half, 0.015 + half))
    assert rows["svm"]["largest_probability_change"] == pytest.approx(0.03)     # not the raw column's
    assert rows["svm"]["float32_interval_width"] == pytest.approx(0.2)


def test_inside_the_intervals_needs_the_whole_interval_of_the_difference_within_a_quarter_of_the_width():
    row = {"mean_difference": 0.01, "ci_low": -0.02, "ci_high": 0.04, "float32_interval_width": 0.2}
    assert inside_the_intervals(row)                                               # within +-0.05
    assert inside_the_intervals(row | {"ci_low": 0.005})                           # a small, consistent shift
    assert not inside_the_intervals(row | {"ci_high": 0.06})                       # could be larger than 0.05
    assert not inside_the_intervals(row | {"ci_low": -0.3, "ci_high": 0.3})        # too noisy to tell
    assert not inside_the_intervals(row | {"ci_low": float("nan")})
