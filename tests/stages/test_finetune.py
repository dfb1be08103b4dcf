import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from stages import download, finetune, folds, normalize
from tests.conftest import REPO, default_params
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.networks.backbones import FEATURE_LAYERS
from ultrasound_transfer.networks.feature_extraction import layers_pass
from ultrasound_transfer.outputs.fold_networks import build_network, load_fold
from ultrasound_transfer.outputs.prepared import load_prepared
from ultrasound_transfer.outputs.training_record import load_recipe

pytestmark = pytest.mark.keras_backend


@pytest.mark.parametrize("value", [-0.1, 1.5, "half"])
def test_ft_fraction_outside_unit_interval_is_rejected(project, value):
    params = default_params()
    params["ft_fraction"] = value
    project.write_params(params)
    with pytest.raises(PipelineError, match=r"ft_fraction = .*: must be a number in \[0, 1\]"):
        finetune.main(["phantom", "VGG16"])
    assert not (project / "models").exists()


def test_unknown_model_is_rejected_before_any_work(project):
    project.write_params(default_params())
    with pytest.raises(PipelineError, match="'VGG11' is not known"):
        finetune.main(["phantom", "VGG11"])


def prepared_phantom(project) -> dict:
    """A tiny phantom dataset, normalized and folded, in the project folder; returns the params."""
    params = default_params()
    params.update(image_size=32, models=["VGG16"])
    params["download"]["phantom"].update(count=24, images_per_patient=2, native_size=48)
    params["cv"]["n_splits"] = 3
    params["finetune"].update(epochs=2, batch_size=8, validation_fraction=0.0)
    # No validation images to choose an operating point, a calibration or C on.
    params["evaluation"].update(operating_point="argmax", dense_calibration="none")
    params["svm"]["C_selection"] = "inner"
    project.write_params(params)
    download.main(["phantom"])
    normalize.main(["phantom"])
    folds.main(["phantom"])
    return params


def finetune_process(project) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "stages.finetune", "phantom", "VGG16"], cwd=project.root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the resume logic is the stage's, not the backend's; each backend's bit-for-bit repeat of "
                           "a fold is test_fitting's, so CI runs this on the default backend only")
def test_interrupted_run_resumes_at_first_unfinished_fold_with_the_same_results(project):
    prepared_phantom(project)
    out = project / "models/phantom/VGG16"
    interrupted = finetune_process(project)
    while not (out / ".unfinished/fold1.done").exists():
        assert interrupted.poll() is None, interrupted.stdout.read()
        time.sleep(0.01)
    interrupted.send_signal(signal.SIGTERM)
    assert interrupted.wait(60) != 0
    assert not (out / "weights").exists() and not (out / "training").exists()   # nothing half-written
    done_before = sorted(p.name for p in (out / ".unfinished").glob("fold*.done"))
    assert "fold1.done" in done_before and "fold3.done" not in done_before

    resumed = finetune_process(project)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert "resuming an interrupted run; folds [1" in log
    assert "fold 1/3: training" not in log and "fold 3/3: training" in log
    assert not (out / ".unfinished").exists()
    after_resume = (out / "training/dense_predictions.csv").read_text()

    uninterrupted = finetune_process(project)
    assert uninterrupted.wait(300) == 0
    assert (out / "training/dense_predictions.csv").read_text() == after_resume
    assert sorted(p.name for p in (out / "weights").iterdir()) == [f"fold{k}.weights.npz" for k in (1, 2, 3)]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the choice of path is the stage's and augmentation is NumPy in the loader, so CI runs "
                           "this on the default backend only")
def test_augmentation_takes_the_plain_path_and_records_why(project):
    params = prepared_phantom(project)
    params["finetune"]["augmentation"]["enabled"] = True
    project.write_params(params)
    finetune.main(["phantom", "VGG16"])
    training = json.loads((project / "models/phantom/VGG16/training/freezing.json").read_text())["training"]
    assert training == {"path": "full network", "reason": "augmentation changes the frozen part's input every epoch"}
    params["finetune"]["augmentation"]["enabled"] = False
    project.write_params(params)
    finetune.main(["phantom", "VGG16"])
    training = json.loads((project / "models/phantom/VGG16/training/freezing.json").read_text())["training"]
    assert training["path"] == "frozen-prefix cache" and training["cached_layers"] == ["block5_conv1"]


@pytest.mark.parametrize("fraction", [0.5, 1.0], ids=["frozen-prefix cache", "full network"])
def test_the_features_are_those_of_each_fold_network_rebuilt_from_its_saved_weights(project, fraction, capsys):
    """What the SVM reads is what the saved fold networks compute, for both feature layers and every image."""
    params = prepared_phantom(project)
    params["ft_fraction"] = fraction
    project.write_params(params)
    finetune.main(["phantom", "VGG16"])
    # Each epoch line says where the stage is: 3 folds x 2 epochs.
    shown = capsys.readouterr().out
    assert re.search(r"fold 3/3 epoch 2/2 .*; 6/6 epochs, \d+:\d\d so far, at most 0:00 left\)", shown)
    # The recipe alone (training/network.json) rebuilds each fold network, params.yaml aside.
    data, recipe = load_prepared("phantom"), load_recipe("phantom", "VGG16")
    project.write_params({**params, "ft_fraction": 0.0, "seed": 1,
                          "finetune": {**params["finetune"], "head_units": 8}})
    assert recipe.ft_fraction == fraction and recipe.preprocessing.image_size == 32 and recipe.splits == 3
    model = build_network(recipe)
    with layers_pass(model, data.images, layer_names=list(FEATURE_LAYERS.values()), model_name="VGG16",
                     batch_size=8) as outputs_now:
        for k in (1, 2, 3):
            load_fold(model, recipe, k)
            with np.load(project / f"data/features/phantom/VGG16/fold{k}.npz", allow_pickle=False) as stored:
                assert list(stored["ids"]) == list(data.manifest["id"])
                for layer, expected in zip(FEATURE_LAYERS, outputs_now(), strict=True):
                    assert stored[layer].shape == expected.shape
                    np.testing.assert_allclose(stored[layer], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="what is recorded and fed is the stage's, not the backend's; loading a weights file on "
                           "each backend is test_backbones' (CI runs this on the default backend only)")
def test_a_declared_weights_file_starts_its_network_and_the_recipe_records_it_and_its_preprocessing(project):
    import hashlib

    from ultrasound_transfer.backbone_weights import declaration_path
    from ultrasound_transfer.networks.backbones import build_backbone

    params = prepared_phantom(project)
    source = build_backbone("VGG16", 32, None)
    path = project.root / "models/backbones/vgg16_domain.weights.h5"
    path.parent.mkdir(parents=True)
    source.save_weights(path)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    declaration_path(path).write_text(json.dumps({"network": "VGG16", "preprocessing": "unit", "sha256": sha256}))
    params.update(weights={"VGG16": "models/backbones/vgg16_domain.weights.h5"}, ft_fraction=0.15)
    project.write_params(params)
    finetune.main(["phantom", "VGG16"])
    recipe = load_recipe("phantom", "VGG16")
    assert (recipe.weights, recipe.input_preprocessing, recipe.weights_sha256) == (
        "models/backbones/vgg16_domain.weights.h5", "unit", sha256)
    fold = build_network(recipe)
    load_fold(fold, recipe, 1)
    first = fold.get_layer("block1_conv1")          # frozen at ft_fraction 0.15: as loaded from the file
    assert np.array_equal(first.get_weights()[0], source.get_layer("block1_conv1").get_weights()[0])
