"""predict's checks that need no trained network (the whole command runs in test_commands)."""

import re

import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.deployment.predict import PredictRequest, run_predict


def test_an_out_that_is_a_folder_or_lies_under_a_file_is_refused_before_any_scan_is_read(tmp_path):
    scan = tmp_path / "scan.png"           # never read: the refusal comes first
    with pytest.raises(PipelineError, match=rf"--out {re.escape(str(tmp_path))} is a folder; .*predictions\.csv"):
        run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=[str(scan)], out=tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PipelineError, match=r"notes\.txt is a file, not a folder"):
        run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=[str(scan)],
                                   out=tmp_path / "notes.txt" / "p.csv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
