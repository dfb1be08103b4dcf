"""predict's checks that need no trained network (the whole command runs in test_commands)."""

import re

import pytest

from tests.memory import traced_peak
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


def test_an_out_that_is_not_an_earlier_table_of_predict_is_never_replaced(tmp_path, monkeypatch):
    """params.yaml, a pipeline output, a scan: --out refuses them all before any network is built."""
    monkeypatch.chdir(tmp_path)             # no trained study here: an accepted --out meets that refusal next
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"\x89PNG not really")
    params = tmp_path / "params.yaml"
    params.write_text("datasets: [phantom]\n")
    for target, refusal in ((params, r"exists and is not a table this command wrote"),
                            (scan, r"exists and is not a table this command wrote")):
        with pytest.raises(PipelineError, match=refusal):
            run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=[str(scan)], out=target))
    assert params.read_text() == "datasets: [phantom]\n" and scan.read_bytes() == b"\x89PNG not really"
    earlier = tmp_path / "earlier.csv"
    earlier.write_text("file,frame,status,note,dense_prob_malignant\nscan.png,1,ok,,0.5\n")
    with pytest.raises(PipelineError, match=r"has no trained study|is missing"):       # got past --out: own table
        run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=[str(scan)], out=earlier))


def test_an_out_that_names_a_scan_being_read_is_refused_even_if_it_looks_like_a_table(tmp_path):
    scan = tmp_path / "table.csv"
    scan.write_text("file,frame,status,note\n")
    with pytest.raises(PipelineError, match=r"is one of the scans being read"):
        run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=[str(scan)], out=scan))


def test_frames_are_squared_as_they_stream_holding_one_full_frame_at_a_time(tmp_path):
    """Six 9-megapixel frames: the peak is about one decoded frame, not six (nor two)."""
    import cv2
    import numpy as np

    from ultrasound_transfer.deployment.predict import squared_frames

    rng = np.random.default_rng(0)
    side = 3000
    files = []
    for i in range(6):
        frame = cv2.resize(rng.integers(0, 256, (30, 30), dtype=np.uint8), (side, side),
                           interpolation=cv2.INTER_NEAREST)
        files.append(tmp_path / f"large{i}.png")
        cv2.imwrite(str(files[-1]), frame)
    squares = []
    peak = traced_peak(lambda: squares.extend(item.square for item in squared_frames(files, image_size=32,
                                                                                      resize="letterbox")))
    assert len(squares) == 6 and squares[0].shape == (32, 32)
    assert peak < 1.5 * side * side, f"{peak / 1e6:.1f} MB for frames of {side * side / 1e6:.0f} MB"
