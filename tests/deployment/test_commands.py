"""predict, explain and export on a study trained by a real ``dvc repro`` in a scratch copy of the repository."""

import json
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.data.test_dicom import PATIENT_ID, PATIENT_NAME, write_dicom
from tests.scratch_repository import TINY, commit_all, run
from ultrasound_transfer.deployment.scans import network_squares, read_scans

# One process under pytest -n builds its study once (tests/conftest.py, SHARED_STUDY_MODULES).
pytestmark = pytest.mark.slow

MODELS = TINY["models"]          # VGG16 (one cached tensor) and ResNet50 (a cut inside a residual block)


@pytest.fixture(scope="module")
def study(trained_tiny_study, tmp_path_factory):
    """The trained TINY study (tests.scratch_repository), committed, to run the commands in."""
    repo = trained_tiny_study.copy_to(tmp_path_factory.mktemp("study"))
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
    """The command in a fresh process, as a person or a script runs it (exit status, stdout, stderr)."""
    return run([sys.executable, "-m", "ultrasound_transfer", *args], repo, check=False)


def refusal(*args) -> str:
    """The message of the command run in this process (the working directory is the study), which must refuse."""
    from ultrasound_transfer.cli import run as run_command
    from ultrasound_transfer.common import PipelineError

    with pytest.raises(PipelineError) as refused:
        run_command(list(args))
    return str(refused.value)


@pytest.mark.parametrize("model", MODELS)
def test_the_ensemble_is_the_study_each_split_as_evaluate_read_it(study, model, monkeypatch):
    from ultrasound_transfer.deployment.trained import load_trained_network

    monkeypatch.chdir(study)
    trained = load_trained_network("phantom", model)
    images = np.load(study / "data/prepared/phantom/images.npy").astype(np.float32)
    ids = pd.read_csv(study / "data/prepared/phantom/manifest.csv")["id"].tolist()
    out = trained.network.predict(images, verbose=0)
    read = pd.read_csv(study / f"metrics/cv/phantom/{model}.predictions.csv")
    assert len(trained.splits) == 3 and set(read["split"]) == {1, 2, 3}
    for k, split in enumerate(trained.splits):
        rows = read[read["split"] == split.k]
        at = [ids.index(i) for i in rows["id"]]
        assert np.abs(out["dense_splits"][at, k] - rows["dense_prob_malignant"]).max() < 1e-4
        assert np.abs(out["svm_splits"][at, k] - rows["svm_prob_malignant"]).max() < 1e-4
        assert np.allclose(rows["dense_threshold"], split.dense.threshold)
        assert np.allclose(rows["svm_threshold"], split.svm.threshold)
    assert np.allclose(out["dense"][:, 0], out["dense_splits"].mean(axis=1), atol=1e-6)
    assert trained.thresholds["svm"] == pytest.approx(read.groupby("split")["svm_threshold"].first().mean())
    # The study's own images are what the novelty rule calls typical: few are flagged (99 % of held-out ones
    # stay under the threshold, and most of these images trained some split).
    assert (out["novelty"][:, 0] > trained.novelty_threshold).mean() < 0.1


def test_more_frames_than_a_batch_go_through_the_graphs_a_stream_of_batches_traced(study, monkeypatch):
    """A Python caller's array of many frames gets predict's outputs, through the batch call the command makes:
    on TensorFlow nothing is traced beyond the two batch shapes (Keras predict would trace its tf.data path)."""
    from benchmarks.predict import tracing_count
    from ultrasound_transfer.deployment.predict import PREDICT_BATCH, ensemble_probabilities
    from ultrasound_transfer.deployment.trained import load_trained_network

    monkeypatch.chdir(study)
    trained = load_trained_network("phantom", MODELS[0])
    images = np.load(study / "data/prepared/phantom/images.npy").astype(np.float32)
    frames = np.resize(images, (2 * PREDICT_BATCH + 5, *images.shape[1:]))
    for n in (PREDICT_BATCH, 5):           # the shapes a stream of 2 * PREDICT_BATCH + 5 frames traces
        ensemble_probabilities(trained, frames[:n])
    traced = tracing_count([trained.network])      # None off TensorFlow, which alone counts its traces
    outputs = ensemble_probabilities(trained, frames)
    assert tracing_count([trained.network]) == traced
    expected = trained.network.predict(frames, batch_size=PREDICT_BATCH, verbose=0)
    assert set(outputs) == set(expected)
    for name, values in expected.items():
        assert outputs[name].shape == values.shape and outputs[name].dtype == np.float64
        np.testing.assert_allclose(outputs[name], values, rtol=0, atol=1e-6)


def test_predict_reads_png_and_dicom_alike_and_gives_each_bad_file_its_row(study, scans):
    result = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", "VGG16", "--out",
                                 "scans.csv", str(scans))
    assert result.returncode == 2, result.stderr
    assert "1 of 5 files could not be read" in result.stderr and "notes.png" in result.stderr
    table = pd.read_csv(study / "scans.csv")
    table["key"] = table["file"].str.rsplit("/", n=1).str[-1] + "#" + table["frame"].astype(str)
    ok = table[table["status"] != "error"].set_index("key")
    assert len(ok) == 6 and set(table.loc[table["status"] == "error", "file"].str[-9:]) == {"notes.png"}
    png = next(name for name in ok.index if name.endswith(".png#1"))
    for column in ("dense_prob_malignant", "svm_prob_malignant"):
        assert abs(ok.loc[png, column] - ok.loc["first-again.dcm#1", column]) < 1e-6   # one code path
        assert abs(ok.loc[png, column] - ok.loc["loop.dcm#1", column]) < 1e-6
        assert 0 <= ok[column].min() and ok[column].max() <= 1
    assert set(ok["dense_class"]) <= {"benign", "malignant"}
    called = ok["svm_prob_malignant"] >= ok["svm_threshold"]
    assert (ok["svm_class"] == np.where(called, "malignant", "benign")).all()
    error_note = table.loc[table["status"] == "error", "note"].item()
    assert "notes.png" in error_note and "notes.png" in result.stdout and not re.search(r"\bnan\b", result.stdout)
    assert error_note.split()[-1].rstrip(".") in result.stdout         # the reason reaches the terminal, whole
    everything = (study / "scans.csv").read_text() + result.stdout + result.stderr
    assert PATIENT_NAME not in everything and PATIENT_ID not in everything and "Doe" not in everything


def test_frames_that_are_not_ultrasound_get_a_warning_not_a_silent_call(study, tmp_path):
    """Black, uniform noise and a photograph of text: each called, each flagged; the study's own frames not."""
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((96, 128), np.uint8))
    cv2.imwrite(str(tmp_path / "noise.png"), rng.integers(0, 256, (96, 128)).astype(np.uint8))
    text = np.full((300, 400, 3), 245, np.uint8)
    for i, line in enumerate(["Lorem ipsum dolor sit", "amet consectetur", "adipiscing elit sed", "do eiusmod"]):
        cv2.putText(text, line, (10, 50 + 50 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 2, cv2.LINE_AA)
    cv2.imwrite(str(tmp_path / "text-photo.jpg"), text)
    own = sorted((study / "data/raw/phantom").rglob("*.png"))[:16]
    for model in MODELS:
        result = ultrasound_transfer(study, "predict", "--dataset", "phantom", "--model", model, "--out",
                                     f"odd-{model}.csv", str(tmp_path), *map(str, own))
        assert result.returncode == 0, result.stderr
        table = pd.read_csv(study / f"odd-{model}.csv", keep_default_na=False).set_index("file")
        odd = table.loc[[str(tmp_path / name) for name in ("black.png", "noise.png", "text-photo.jpg")]]
        assert (odd["status"] == "warning").all(), (model, odd[["status", "novelty"]])
        assert "blank" in odd["note"].iloc[0] and "noise" in odd["note"].iloc[1] and "unlike" in odd["note"].iloc[2]
        assert (odd[["dense_class", "svm_class"]] != "").all().all()                # still called, with the warning
        assert (table.loc[list(map(str, own)), "status"] == "ok").mean() >= 0.9
        flagged = int((table["status"] == "warning").sum())
        assert f"{flagged} of {len(table)} frames are unlike the images" in result.stdout


def test_strict_stops_at_the_first_bad_file_and_writes_nothing(study, scans, monkeypatch):
    monkeypatch.chdir(study)
    message = refusal("predict", "--dataset", "phantom", "--model", "VGG16", "--out", "strict.csv", "--strict",
                      str(scans))
    assert "notes.png" in message and "--strict" in message and not (study / "strict.csv").exists()


def test_an_untrained_or_tampered_study_is_refused_before_anything_is_written(study, scans, monkeypatch):
    monkeypatch.chdir(study)
    png = str(next(scans.glob("*.png")))
    assert "phantom x ResNet101 was not trained here" in refusal("predict", "--dataset", "phantom", "--model",
                                                                  "ResNet101", "--out", "x.csv", png)
    fold = study / "models/phantom/VGG16/weights/fold2.weights.npz"
    kept = fold.read_bytes()
    try:
        fold.write_bytes(kept + b"\0")
        assert "fold2.weights.npz is not the fold file this study trained" in refusal(
            "predict", "--dataset", "phantom", "--model", "VGG16", "--out", "x.csv", png)
    finally:
        fold.write_bytes(kept)
    kept_classifiers = (study / "models/phantom/VGG16/classifiers.json").read_bytes()
    try:
        recipe = study / "models/phantom/VGG16/training/network.json"
        kept_recipe = recipe.read_bytes()
        recipe.write_bytes(kept_recipe.replace(b'"keras"', b'"keras" ', 1))   # as after finetune ran again
        assert "was fitted beside other fold networks" in refusal("export", "--dataset", "phantom", "--model",
                                                                  "VGG16", "--out", "x")
    finally:
        recipe.write_bytes(kept_recipe)
        (study / "models/phantom/VGG16/classifiers.json").write_bytes(kept_classifiers)
    assert not (study / "x.csv").exists() and not (study / "x").exists()


# Every parameter that shapes what predict computes, edited since the study ran: each is read from the trained
# study, so the answer does not move, and predict names the edit (the stages have not taken it up yet).
STALE_EDITS = [("image_size", 48), ("normalize.resize", "stretch"), ("ft_fraction", 0.5), ("weights", "imagenet"),
               ("seed", 7), ("cv.n_splits", 2), ("finetune.head_units", 16), ("finetune.head_norm", "none"),
               ("finetune.batch_norm", "training"), ("finetune.precision", "mixed_bfloat16"),
               ("features.layer", "head"), ("svm.C_grid", [1.0]), ("evaluation.operating_point", "argmax")]


def test_a_parameter_edited_since_the_study_ran_changes_no_answer_and_is_named(study, scans, monkeypatch, capsys):
    import yaml

    from ultrasound_transfer.deployment.predict import PredictRequest, run_predict

    monkeypatch.chdir(study)
    pngs = [str(p) for p in sorted(scans.glob("*.png")) if p.name != "notes.png"]
    columns = ["dense_prob_malignant", "dense_threshold", "svm_prob_malignant", "svm_threshold", "novelty"]
    baseline = run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=pngs, out=study / "stale.csv"))
    assert "params.yaml has changed" not in capsys.readouterr().out
    original = (study / "params.yaml").read_text()
    try:
        # One edit at a time: each alone is named in the note and changes no answer.
        for key, value in STALE_EDITS:
            params = yaml.safe_load(original)
            *parents, leaf = key.split(".")
            node = params
            for part in parents:
                node = node[part]
            node[leaf] = value
            (study / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            table = run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=pngs, out=study / "stale.csv"))
            np.testing.assert_array_equal(table[columns].to_numpy(), baseline[columns].to_numpy(), err_msg=key)
            shown = capsys.readouterr().out
            assert "params.yaml has changed since phantom x VGG16 was trained" in shown and key in shown, key
    finally:
        (study / "params.yaml").write_text(original)


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
    outputs = b"".join(p.read_bytes() for p in (study / "cams").iterdir()) + (result.stdout + result.stderr).encode()
    for identifier in (PATIENT_NAME, PATIENT_ID, "Doe"):        # loop.dcm's header carries them
        assert identifier.encode() not in outputs


@pytest.fixture(scope="module")
def exported(study, scans, tmp_path_factory):
    """VGG16 exported, the frames that predict read, and predict's table of them (both run in this process; the
    files are read in fresh ones). The ONNX assembly of tails that read several tensors is test_export's."""
    from ultrasound_transfer.deployment.export import ExportRequest, run_export
    from ultrasound_transfer.deployment.predict import PredictRequest, run_predict

    pngs = sorted(p for p in scans.glob("*.png") if p.name != "notes.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(study)
        # The formats as the README's command gives them: all, ONNX included (it installs with the package).
        folder = run_export(ExportRequest(dataset="phantom", model="VGG16", out=study / "exported"))
        table = run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=[str(p) for p in pngs],
                                           out=study / "pngs.csv"))
    facts = json.loads((folder / "export.json").read_text())
    frames, _ = read_scans(pngs)
    squares = tmp_path_factory.mktemp("squares") / "squares.npy"
    np.save(squares, network_squares(frames, image_size=32, resize=facts["input"]["resize"]))
    return folder, facts, squares, table


def in_a_fresh_process(script: str, cwd) -> np.ndarray:
    """Run ``script`` (which saves ``out.npy``) in a Python process that must not import this project."""
    script += "\nimport sys\nassert not any(name.startswith('ultrasound_transfer') for name in sys.modules)\n"
    fresh = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    return np.load(cwd / "out.npy")


def test_the_keras_file_gives_predicts_probabilities_with_plain_keras_and_carries_its_card(exported, study,
                                                                                           tmp_path):
    folder, facts, squares, table = exported
    out = in_a_fresh_process(f"""
import numpy as np, keras
out = keras.saving.load_model({str(folder / facts["files"]["keras"])!r}).predict(np.load({str(squares)!r}), verbose=0)
np.save("out.npy", np.hstack([out["dense"], out["svm"]]))
""", tmp_path)
    assert np.abs(out - table[["dense_prob_malignant", "svm_prob_malignant"]].to_numpy()).max() < 1e-4
    assert facts["operating_points"]["svm"]["threshold"] == pytest.approx(table["svm_threshold"].iloc[0])
    card = (folder / "model_card.md").read_text()
    internal = json.loads((study / "metrics/cv/phantom/VGG16.json").read_text())
    image_part, case_part = card.split("### Case level")          # the phantom has cases of two images
    assert f"| ROC-AUC | {internal['image']['dense']['roc_auc']:.3f} [" in image_part
    assert f"| ROC-AUC | {internal['case']['dense']['roc_auc']:.3f} [" in case_part.split("##")[0]
    for section in ("## Intended use", "not a medical device", "## Training data and folds", "grouping `near` (",
                    "**Random initial weights**", "## Operating point and calibration", "## Known limits"):
        assert section in card, section


def test_the_onnx_file_gives_predicts_probabilities_with_onnx_runtime(exported, tmp_path):
    folder, facts, squares, table = exported
    out = in_a_fresh_process(f"""
import numpy as np, onnxruntime
session = onnxruntime.InferenceSession({str(folder / facts["files"]["onnx"])!r})
np.save("out.npy", np.hstack(session.run(["dense", "svm"], {{"gray": np.load({str(squares)!r})}})))
""", tmp_path)
    assert np.abs(out - table[["dense_prob_malignant", "svm_prob_malignant"]].to_numpy()).max() < 1e-4


def test_predict_reads_an_experiments_networks_not_the_workspaces(study, scans, monkeypatch):
    from ultrasound_transfer.deployment.predict import PredictRequest, run_predict

    png = str(next(p for p in sorted(scans.glob("*.png")) if p.name != "notes.png"))
    dvc = [sys.executable, "-m", "dvc"]
    # Only VGG16's evaluation: an experiment may run part of the pipeline, and predict reads only that part.
    run(dvc + ["exp", "run", "--name", "sensitive", "-S", "evaluation.operating_point=sensitivity",
               "-S", "evaluation.target=0.95", "evaluate@phantom-VGG16"], study)
    read = pd.read_csv(study / "metrics/cv/phantom/VGG16.predictions.csv")
    expected = read.groupby("fold")["dense_threshold"].first().mean()
    run(["git", "checkout", "--", "."], study)            # params.yaml, dvc.lock and the uncached metrics
    run(dvc + ["checkout", "--force"], study)
    monkeypatch.chdir(study)
    baseline = run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=[png], out=study / "baseline.csv"))
    chosen = run_predict(PredictRequest(dataset="phantom", model="VGG16", paths=[png], experiment="sensitive",
                                        out=study / "sensitive.csv"))
    assert chosen["dense_threshold"].iloc[0] == pytest.approx(expected)
    assert chosen["dense_threshold"].iloc[0] != pytest.approx(baseline["dense_threshold"].iloc[0])
    assert pd.read_csv(study / "sensitive.csv")["dense_threshold"].iloc[0] == pytest.approx(expected)
    assert "--experiment no-such-experiment: no experiment, commit or branch" in refusal(
        "predict", "--dataset", "phantom", "--model", "VGG16", "--experiment", "no-such-experiment", png)
