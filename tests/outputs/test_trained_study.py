"""The trained study's checks that need no network: which parameters changed, and figures of another run."""

import numpy as np
import pytest

from stages import evaluate
from tests.stages.test_evaluate import noise_plus, toy_project
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.outputs.classifiers import load_classifiers
from ultrasound_transfer.outputs.trained_study import changed_values, check_recorded_thresholds


def test_changed_values_names_each_leaf_then_and_now():
    recorded = {"ft_fraction": 0.15, "finetune": {"epochs": 15, "head_units": 256}, "normalize": {"resize": "crop"}}
    now = {"ft_fraction": 0.15, "finetune": {"epochs": 15, "head_units": 128}, "normalize": {}}
    found = [c for key, value in recorded.items() for c in changed_values(value, now.get(key), key)]
    assert found == ["finetune.head_units 256 then, 128 now", "normalize.resize 'crop' then, None now"]


def test_figures_of_another_evaluate_run_are_refused(project):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() + np.random.default_rng(k).normal(
        0, 1.0, len(m))))
    evaluate.main(["phantom", "M"])
    kept = load_classifiers("phantom", "M")
    check_recorded_thresholds("phantom", "M", kept)
    path = project / "metrics/cv/phantom/M.predictions.csv"
    text = path.read_text()
    table = text.splitlines()
    header = table[0].split(",")
    column = header.index("svm_threshold")
    first = table[1].split(",")
    first[column] = str(float(first[column]) + 0.01)
    path.write_text("\n".join([table[0], ",".join(first), *table[2:]]) + "\n")
    with pytest.raises(PipelineError, match=r"come from different evaluate runs.*dvc repro evaluate@phantom-M"):
        check_recorded_thresholds("phantom", "M", kept)
