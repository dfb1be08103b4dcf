import pandas as pd
import pytest

from stages import download
from stages.common import PipelineError
from tests.conftest import default_params


def test_phantom_raw_layout(project):
    params = default_params()
    params["download"]["phantom"].update(count=10, images_per_patient=2, native_size=40)
    project.write_params(params)
    download.main(["phantom"])
    labels = pd.read_csv(project / "data/raw/phantom/labels.csv")
    assert list(labels.columns) == ["path", "label", "case"] and len(labels) == 10
    assert all((project / "data/raw/phantom" / p).is_file() for p in labels["path"])
    assert labels.groupby("case")["label"].nunique().max() == 1


def test_unknown_dataset_lists_known_ones(project):
    project.write_params(default_params())
    with pytest.raises(PipelineError, match=r"'busy'.*phantom"):
        download.main(["busy"])


def test_bad_phantom_param_names_key_and_writes_nothing(project):
    params = default_params()
    params["download"]["phantom"]["difficulty"] = 2
    project.write_params(params)
    with pytest.raises(PipelineError, match=r"download.phantom.difficulty = 2 .*\[0.0, 1.0\]"):
        download.main(["phantom"])
    params["download"]["phantom"] = {"count": 10, "colour": "red"}
    project.write_params(params)
    with pytest.raises(PipelineError, match="colour"):
        download.main(["phantom"])
    assert not (project / "data").exists() or not any((project / "data").rglob("*.png"))
