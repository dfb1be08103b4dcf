import cv2
import numpy as np
import pandas as pd
import pytest

from stages import normalize
from stages.common import PipelineError


def make_raw(project, files):
    """files: list of (relative path, label, case, pixels)."""
    raw = project / "data/raw/toy"
    for relative, _, _, pixels in files:
        (raw / relative).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(raw / relative), pixels)
    pd.DataFrame([f[:3] for f in files], columns=["path", "label", "case"]).to_csv(raw / "labels.csv", index=False)
    return raw


def test_manifest_array_and_groups(project):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (30, 60), dtype=np.uint8)
    b = rng.integers(0, 255, (50, 20), dtype=np.uint8)
    make_raw(project, [
        ("benign/a.png", "benign", "p1", a),
        ("benign/a_copy.bmp", "benign", "p2", a),      # same pixels, other case -> same group
        ("malignant/b.png", "malignant", "p3", b),
        ("malignant/c.jpg", "malignant", "p3", cv2.merge([b, b, b])),
    ])
    project.write_params({"image_size": 40})
    normalize.main(["toy"])
    out = project / "data/prepared/toy"
    images = np.load(out / "images.npy")
    manifest = pd.read_csv(out / "manifest.csv", dtype={"group": str})
    assert images.shape == (4, 40, 40) and images.dtype == np.uint8
    assert {"id", "source", "label", "class_name", "group", "sha256"} <= set(manifest.columns)
    assert manifest["label"].tolist() == [0, 0, 1, 1]
    assert manifest["group"].tolist() == ["p1", "p1", "p3", "p3"]
    assert manifest["sha256"][0] == manifest["sha256"][1]
    assert (manifest["height"][2], manifest["width"][2]) == (50, 20)
    assert np.array_equal(images[0], normalize.letterbox(a, 40))


def test_missing_raw_folder_says_which_stage_to_run(project):
    project.write_params({"image_size": 40})
    with pytest.raises(PipelineError, match=r"data/raw/toy is missing.*download@toy"):
        normalize.main(["toy"])


def test_undecodable_image_leaves_no_output(project):
    raw = make_raw(project, [("benign/a.png", "benign", "p1", np.zeros((8, 8), np.uint8))])
    (raw / "benign/a.png").write_bytes(b"garbage")
    project.write_params({"image_size": 40})
    with pytest.raises(PipelineError, match="a.png"):
        normalize.main(["toy"])
    assert not (project / "data/prepared/toy").exists()
    assert not list((project / "data/prepared").glob(".*"))
