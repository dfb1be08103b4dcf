import numpy as np
import pytest

from tests.networks.test_frozen_prefix import gray_images
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.networks.backbones import build_classifier, to_network_input
from ultrasound_transfer.networks.fold_weights import (
    frozen_fingerprint,
    load_fold_weights,
    read_meta,
    save_fold_weights,
    trained_layers,
)
from ultrasound_transfer.networks.runtime import seed_everything
from ultrasound_transfer.settings import HeadSettings

pytestmark = pytest.mark.keras_backend


def seeded_classifier(fraction: float, seed: int = 3, name: str = "ResNet50"):
    seed_everything(seed)
    model, _ = build_classifier(name, image_size=75 if name == "InceptionV3" else 32, n_classes=2, weights="none",
                                ft_fraction=fraction, head=HeadSettings(8, 0.5))
    return model


def imitate_training(model) -> None:
    """Change every trained variable (moving statistics of trained batch norms included), as a fold would."""
    rng = np.random.default_rng(1)
    for _, layer in trained_layers(model):
        for variable in layer.weights:
            value = np.asarray(variable)
            variable.assign(value + rng.normal(scale=0.05, size=value.shape).astype(value.dtype) ** 2)


def test_trained_part_round_trips_onto_a_rebuilt_network(tmp_path):
    trained = seeded_classifier(0.15)
    frozen = frozen_fingerprint(trained)
    imitate_training(trained)
    assert frozen_fingerprint(trained) == frozen          # training leaves the frozen part alone
    path = tmp_path / "fold1.weights.npz"
    save_fold_weights(trained, path, frozen)

    rebuilt = seeded_classifier(0.15)                     # same seed: the same random frozen part
    x = to_network_input(gray_images(4, 32), "ResNet50")
    assert not np.allclose(rebuilt.predict(x, verbose=0), trained.predict(x, verbose=0))
    load_fold_weights(rebuilt, path, frozen_fingerprint(rebuilt), rerun="dvc repro finetune")
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), trained.predict(x, verbose=0))
    for a, b in zip(rebuilt.weights, trained.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    meta = read_meta(path)
    assert meta["trained_layer_names"] == [layer.name for _, layer in trained_layers(trained)]
    assert meta["trained_layer_names"][-2:] == ["head_dense", "predictions"]
    stored = sum(np.asarray(v).nbytes for _, layer in trained_layers(trained) for v in layer.weights)
    whole = sum(np.asarray(v).nbytes for v in trained.weights)
    assert stored < 0.8 * whole and path.stat().st_size < stored + 64 * 1024


def test_a_fold_never_lands_on_another_frozen_part_or_strategy(tmp_path):
    trained = seeded_classifier(0.15)
    path = tmp_path / "fold1.weights.npz"
    save_fold_weights(trained, path, frozen_fingerprint(trained))

    other_seed = seeded_classifier(0.15, seed=4)
    with pytest.raises(PipelineError, match="different frozen part.*dvc repro finetune@x"):
        load_fold_weights(other_seed, path, frozen_fingerprint(other_seed), rerun="dvc repro finetune@x")
    other_strategy = seeded_classifier(0.5)
    with pytest.raises(PipelineError, match="another network or strategy"):
        load_fold_weights(other_strategy, path, frozen_fingerprint(other_strategy), rerun="dvc repro finetune@x")
    with pytest.raises(PipelineError, match="missing; run 'dvc repro finetune@x'"):
        load_fold_weights(trained, tmp_path / "fold2.weights.npz", "", rerun="dvc repro finetune@x")


def test_nothing_frozen_stores_everything_and_fingerprints_nothing(tmp_path):
    model = seeded_classifier(1.0, name="VGG16")
    assert [layer for _, layer in trained_layers(model)] == [layer for layer in model.layers if layer.weights]
    assert frozen_fingerprint(model) == frozen_fingerprint(seeded_classifier(1.0, seed=9, name="VGG16"))


def test_a_fold_loads_into_a_network_built_after_others_in_the_same_process(tmp_path):
    """Keras numbers automatic layer names per process (conv2d_82, conv2d_176, ...): files must not depend on them."""
    trained = seeded_classifier(0.15, name="InceptionV3")
    imitate_training(trained)
    path = tmp_path / "fold1.weights.npz"
    save_fold_weights(trained, path, frozen_fingerprint(trained))
    rebuilt = seeded_classifier(0.15, name="InceptionV3")        # same process: every automatic name differs
    assert [layer.name for layer in rebuilt.layers] != [layer.name for layer in trained.layers]
    load_fold_weights(rebuilt, path, frozen_fingerprint(rebuilt), rerun="dvc repro finetune")
    for a, b in zip(rebuilt.weights, trained.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
