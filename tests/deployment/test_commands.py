"""predict, explain and export on a study trained by a real ``dvc repro`` in a scratch copy of the repository."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, merged
from tests.data.test_dicom import PATIENT_ID, PATIENT_NAME, write_dicom
from tests.scratch_repository import commit_all, copy_repository, run
from tests.test_pipeline import TINY
from ultrasound_transfer.deployment.scans import network_squares, read_scans

pytestmark = pytest.mark.slow

MODELS = TINY["models"]          # VGG16 (one cached tensor) and ResNet50 (a cut inside a residual block)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study trained and evaluated by DVC, committed, with a folder of scans beside it."""
    repo = tmp_path_factory.mktemp("study")
    copy_repository(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(merged(yaml.safe_load((REPO / "params.yaml").read_text()),
                                                            TINY), sort_keys=False))
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "repro", *(f"evaluate@phantom-{m}" for m in MODELS)], repo)
    commit_all(repo, "trained")
    return repo


@pytest.fixture(scope="module")
def scans(study, tmp_path_factory):
    """Two PNG frames of the study's own raw data, the first again as DICOM (with a patient's name), a cine loop
    of three frames, and a file that is not an image."""
    folder = tmp_path_factory.mktemp("scans")
    sources = sorted((study / "data/raw/phantom/benign").glob("*.png"))[:1] + sorted(
        (study / "data/raw/phantom/malignant").glob("*.png"))[:1]
    for source in sources:
        shutil.copy(source, folder / source.name)
    first = cv2.imread(str(sources[0]), cv2.IMREAD_GRAYSCALE)
    write_dicom(folder / "first-again.dcm", first, "MONOCHROME2")
    write_dicom(folder / "loop.dcm", np.stack([first, first[::-1], first[:, ::-1]]), "MONOCHROME2")
    (folder / "notes.png").write_text("not an image")
    return folder


def ultrasound_transfer(repo, *args):
    return run([sys.executable, "-m", "ultrasound_transfer", *args], repo, check=False)


@pytest.mark.parametrize("model", MODELS)
def test_the_ensemble_is_the_study_each_split_as_evaluate_read_it(study, model, monkeypatch):
    from ultrasound_transfer.deployment.trained import load_trained_network
    from ultrasound_transfer.parameters import load_settings

    monkeypatch.chdir(study)
    trained = load_trained_network("phantom", model, load_settings())
    images = np.load(study / "data/prepared/phantom/images.npy").astype(np.float32)
    ids = pd.read_csv(study / "data/prepared/phantom/manifest.csv")["id"].tolist()
    out = trained.network.predict(images, verbose=0)
    read = pd.read_csv(study / f"metrics/cv/phantom/{model}.predictions.csv")
    assert len(trained.splits) == 3 and set(read["fold"]) == {1, 2, 3}
    for k, split in enumerate(trained.splits):
        rows = read[read["fold"] == split.k]
        at = [ids.index(i) for i in rows["id"]]
        assert np.abs(out["dense_splits"][at, k] - rows["dense_prob_malignant"]).max() < 1e-4
        assert np.abs(out["svm_splits"][at, k] - rows["svm_prob_malignant"]).max() < 1e-4
        assert np.allclose(rows["dense_threshold"], split.dense_threshold)
        assert np.allclose(rows["svm_threshold"], split.svm.threshold)
    assert np.allclose(out["dense"][:, 0], out["dense_splits"].mean(axis=1), atol=1e-6)
    assert trained.thresholds["svm"] == pytest.approx(read.groupby("fold")["svm_threshold"].first().mean())


def test_predict_reads_png_and_dicom_alike_and_gives_each_bad_file_its_row(study, scans):
    result = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", "VGG16", "--out",
                                 "scans.csv", str(scans))
    assert result.returncode == 2, result.stderr
    assert "1 of 5 files could not be read" in result.stderr and "notes.png" in result.stderr
    table = pd.read_csv(study / "scans.csv")
    table["key"] = table["file"].str.rsplit("/", n=1).str[-1] + "#" + table["frame"].astype(str)
    ok = table[table["status"] == "ok"].set_index("key")
    assert len(ok) == 6 and set(table.loc[table["status"] == "error", "file"].str[-9:]) == {"notes.png"}
    png = next(name for name in ok.index if name.endswith(".png#1"))
    for column in ("dense_prob_malignant", "svm_prob_malignant"):
        assert abs(ok.loc[png, column] - ok.loc["first-again.dcm#1", column]) < 1e-6   # one code path
        assert abs(ok.loc[png, column] - ok.loc["loop.dcm#1", column]) < 1e-6
        assert 0 <= ok[column].min() and ok[column].max() <= 1
    assert set(ok["dense_class"]) <= {"benign", "malignant"}
    called = ok["svm_prob_malignant"] >= ok["svm_threshold"]
    assert (ok["svm_class"] == np.where(called, "malignant", "benign")).all()
    everything = (study / "scans.csv").read_text() + result.stdout + result.stderr
    assert PATIENT_NAME not in everything and PATIENT_ID not in everything and "Doe" not in everything

    strict = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", "VGG16", "--out",
                                 "strict.csv", "--strict", str(scans))
    assert strict.returncode == 2 and "notes.png" in strict.stderr and not (study / "strict.csv").exists()


def test_an_untrained_stale_or_reparametrized_network_is_refused_before_anything_is_written(study, scans):
    png = str(next(scans.glob("*.png")))
    refused = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", "ResNet101", "--out", "x.csv",
                                  png)
    assert refused.returncode == 2 and "ResNet101 was never trained here" in refused.stderr
    fold = study / "models/phantom/VGG16/weights/fold2.weights.npz"
    kept = fold.read_bytes()
    try:
        with np.load(fold) as stored:
            arrays = dict(stored)
        meta = json.loads(str(arrays["__meta__"][()]))
        arrays["__meta__"] = np.array(json.dumps({**meta, "frozen_sha256": "0" * 64}))
        np.savez(fold, **arrays)
        stale = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", "VGG16", "--out", "x.csv",
                                    png)
        assert stale.returncode == 2 and "fold2.weights.npz was trained on a different frozen part" in stale.stderr
    finally:
        fold.write_bytes(kept)
    params = (study / "params.yaml").read_text()
    try:
        (study / "params.yaml").write_text(params.replace("ft_fraction: 0.15", "ft_fraction: 0.5"))
        changed = ultrasound_transfer(study, "export", "--dataset", "phantom", "--model", "VGG16", "--out", "x")
        assert changed.returncode == 2 and "ft_fraction 0.15 when it ran, 0.5 now" in changed.stderr
    finally:
        (study / "params.yaml").write_text(params)
    assert not (study / "x.csv").exists() and not (study / "x").exists()


def test_explain_draws_one_grad_cam_overlay_per_frame(study, scans):
    pngs = sorted(str(p) for p in scans.glob("*.png") if p.name != "notes.png")
    result = ultrasound_transfer(study, "explain", "--dataset", "phantom", "--model", "ResNet50", "--out", "cams",
                                 *pngs, str(scans / "loop.dcm"))
    assert result.returncode == 0, result.stderr
    written = sorted((study / "cams").glob("*.png"))
    assert [p.name.split("-", 1)[0] for p in written] == ["0001", "0002", "0003", "0004", "0005"]
    assert written[-1].name.endswith("loop-frame3.png")
    picture = cv2.imread(str(written[0]))
    assert picture.shape[1] >= 256 and picture[30:].std(axis=2).mean() > 1     # coloured by the heat map


def test_export_gives_the_predictions_in_fresh_processes_with_plain_keras_and_onnx_runtime(study, scans, tmp_path):
    formats = "keras,onnx"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        formats = "keras"
    result = ultrasound_transfer(study, "export", "--dataset", "phantom", "--model", "VGG16", "--out", "exported",
                                 "--formats", formats)
    assert result.returncode == 0, result.stderr
    folder = study / "exported"
    facts = json.loads((folder / "export.json").read_text())
    pngs = sorted(p for p in scans.glob("*.png") if p.name != "notes.png")
    predicted = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", "VGG16", "--out",
                                    "pngs.csv", *map(str, pngs))
    assert predicted.returncode == 0, predicted.stderr
    table = pd.read_csv(study / "pngs.csv")
    frames, _ = read_scans(pngs)
    np.save(tmp_path / "squares.npy", network_squares(frames, image_size=32, resize=facts["input"]["resize"]))
    script = f"""
import sys, numpy as np, keras
squares = np.load({str(tmp_path / "squares.npy")!r})
out = keras.saving.load_model({str(folder / facts["files"]["keras"])!r}).predict(squares, verbose=0)
np.save({str(tmp_path / "keras.npy")!r}, np.hstack([out["dense"], out["svm"]]))
if "onnx" in {facts["files"]!r}:
    import onnxruntime
    session = onnxruntime.InferenceSession({str(folder / "phantom-VGG16.onnx")!r})
    dense, svm = session.run(["dense", "svm"], {{"gray": squares}})
    np.save({str(tmp_path / "onnx.npy")!r}, np.hstack([dense, svm]))
assert not any(name.startswith("ultrasound_transfer") for name in sys.modules)
"""
    fresh = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    expected = table[["dense_prob_malignant", "svm_prob_malignant"]].to_numpy()
    assert np.abs(np.load(tmp_path / "keras.npy") - expected).max() < 1e-4
    if "onnx" in facts["files"]:
        assert np.abs(np.load(tmp_path / "onnx.npy") - expected).max() < 1e-4
    assert facts["operating_points"]["svm"]["threshold"] == pytest.approx(table["svm_threshold"].iloc[0])
    card = (folder / "model_card.md").read_text()
    internal = json.loads((study / "metrics/cv/phantom/VGG16.json").read_text())
    level = "case" if "case" in internal else "image"
    assert f"| ROC-AUC | {internal[level]['dense']['roc_auc']:.3f} [" in card
    for section in ("## Intended use", "not a medical device", "## Training data and folds", "grouped by `near`",
                    "**Random initial weights**", "## Operating point and calibration", "## Known limits"):
        assert section in card, section


def test_predict_reads_an_experiments_networks_not_the_workspaces(study, scans):
    png = str(next(p for p in sorted(scans.glob("*.png")) if p.name != "notes.png"))
    dvc = [sys.executable, "-m", "dvc"]
    run(dvc + ["exp", "run", "--name", "sensitive", "-S", "evaluation.operating_point=sensitivity",
               "-S", "evaluation.target=0.95"], study)
    read = pd.read_csv(study / "metrics/cv/phantom/VGG16.predictions.csv")
    expected = read.groupby("fold")["dense_threshold"].first().mean()
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], study)
    run(dvc + ["checkout", "--force"], study)
    baseline = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", "VGG16", "--out",
                                   "baseline.csv", png)
    chosen = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", "VGG16", "--experiment",
                                 "sensitive", "--out", "sensitive.csv", png)
    assert baseline.returncode == 0 and chosen.returncode == 0, chosen.stderr
    from_experiment = pd.read_csv(study / "sensitive.csv")["dense_threshold"].iloc[0]
    assert from_experiment == pytest.approx(expected)
    assert from_experiment != pytest.approx(pd.read_csv(study / "baseline.csv")["dense_threshold"].iloc[0])
    missing = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", "VGG16", "--experiment",
                                  "no-such-experiment", png)
    assert missing.returncode == 2 and "no-such-experiment" in missing.stderr
