import keras
import numpy as np
import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.networks.backbones import build_classifier, to_network_input
from ultrasound_transfer.networks.fitting import compile_classifier, fit_fold
from ultrasound_transfer.networks.frozen_prefix import PrefixCache, has_frozen_part, split_at_frozen_prefix
from ultrasound_transfer.networks.runtime import seed_everything
from ultrasound_transfer.networks.training_paths import choose_training_path
from ultrasound_transfer.settings import HeadSettings, PrefixCacheSettings

pytestmark = pytest.mark.keras_backend

RNG = np.random.default_rng(0)


def gray_images(n: int, size: int) -> np.ndarray:
    """Smooth random gray images (pure noise saturates randomly initialised ResNets)."""
    noise = RNG.normal(size=(n, size // 8 + 1, size // 8 + 1))
    blocks = [np.kron(z, np.ones((8, 8)))[:size, :size] for z in noise]
    return np.stack([np.clip(128 + 60 * b, 0, 255) for b in blocks]).astype(np.uint8)


@pytest.mark.parametrize("name, size, fraction, cut", [
    ("VGG16", 32, 0.15, ["block5_conv1"]),                           # single chain
    ("ResNet50", 32, 0.0, ["pooled"]),                                # head only: pooled features cached
    ("ResNet101", 32, 0.15, ["conv4_block22_1_conv", "conv4_block21_out"]),   # inside a residual block
])
def test_cut_is_what_the_tail_reads(name, size, fraction, cut):
    model, _ = build_classifier(name, image_size=size, n_classes=2, weights="none",
                                ft_fraction=fraction, head=HeadSettings(8, 0.5))
    split = split_at_frozen_prefix(model)
    assert split.cut == cut
    # The tail trains the network's own layers, and only the trained ones carry trainable weights.
    shared = [layer for layer in split.tail.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert all(layer is model.get_layer(layer.name) for layer in shared)
    assert {id(v) for v in split.tail.trainable_weights} == {id(v) for v in model.trainable_weights}
    assert not split.prefix.trainable_weights
    assert split.describe()["cached_values_per_image"] == sum(int(np.prod(t.shape[1:])) for t in split.tail.inputs)


@pytest.mark.parametrize("name, size", [("ResNet50", 32), ("InceptionV3", 75), ("VGG19", 32)])
def test_tail_on_prefix_computes_the_network(name, size):
    model, _ = build_classifier(name, image_size=size, n_classes=3, weights="none",
                                ft_fraction=0.15, head=HeadSettings(8, 0.5))
    split = split_at_frozen_prefix(model)
    x = to_network_input(gray_images(4, size), name)
    through_split = split.tail.predict_on_batch(split.prefix.predict_on_batch(x))
    np.testing.assert_allclose(through_split, model.predict_on_batch(x), rtol=0, atol=1e-6)


def test_inception_cut_inside_a_block_has_several_inputs():
    model, _ = build_classifier("InceptionV3", image_size=75, n_classes=2, weights="none",
                                ft_fraction=0.15, head=HeadSettings(8, 0.5))
    split = split_at_frozen_prefix(model)
    assert len(split.cut) > 1 and len(split.tail.inputs) == len(split.cut)


def test_dropout_stays_in_the_tail_even_with_everything_frozen():
    model, _ = build_classifier("VGG16", image_size=32, n_classes=2, weights="none",
                                ft_fraction=0.0, head=HeadSettings(8, 0.5))
    for layer in model.layers:
        layer.trainable = False
    model.get_layer("predictions").trainable = True
    assert "head_dropout" in {layer.name for layer in split_at_frozen_prefix(model).tail.layers}


def test_nothing_frozen_takes_the_plain_path():
    model, _ = build_classifier("VGG16", image_size=32, n_classes=2, weights="none",
                                ft_fraction=1.0, head=HeadSettings(8, 0.5))
    assert not has_frozen_part(model)
    with choose_training_path(model, gray_images(4, 32), model_name="VGG16", batch_size=2) as path:
        assert path.model is model and path.description["path"] == "full network"
        assert "nothing is frozen" in path.description["reason"]


def test_cache_on_disk_equals_cache_in_memory_and_is_removed(tmp_path):
    model, _ = build_classifier("ResNet50", image_size=32, n_classes=2, weights="none",
                                ft_fraction=0.15, head=HeadSettings(8, 0.5))
    split = split_at_frozen_prefix(model)
    images = gray_images(10, 32)
    to_input = lambda batch: to_network_input(batch, "ResNet50")  # noqa: E731
    with PrefixCache(split, images, to_input=to_input, batch_size=4) as in_memory:
        assert not in_memory.on_disk
        with PrefixCache(split, images, to_input=to_input, batch_size=4, memory_limit_mb=0,
                         scratch_dir=tmp_path) as on_disk:
            assert on_disk.on_disk and all(isinstance(a, np.memmap) for a in on_disk.arrays)
            assert len(list(tmp_path.glob(".prefix-cache-*/tensor*.npy"))) == 2
            for a, b in zip(in_memory.arrays, on_disk.arrays):
                np.testing.assert_array_equal(a, b)
        with PrefixCache(split, images, to_input=to_input, batch_size=4, dtype="float16") as half:
            for a, b in zip(in_memory.arrays, half.arrays):
                assert b.dtype == np.float16
                np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3 * np.abs(a).max())
    assert not list(tmp_path.iterdir())


def test_a_cache_the_disk_cannot_hold_is_refused_before_the_prefix_runs(tmp_path):
    """A memory map on a full disk would kill the process (SIGBUS) halfway; the space is checked first."""
    model, _ = build_classifier("VGG16", image_size=32, n_classes=2, weights="none",
                                ft_fraction=0.15, head=HeadSettings(8, 0.5))
    split = split_at_frozen_prefix(model)
    many = np.broadcast_to(gray_images(1, 32), (10**9, 32, 32))      # a billion images, no memory: terabytes of cache
    never = lambda batch: pytest.fail("the prefix ran")  # noqa: E731
    with pytest.raises(PipelineError, match=rf"the frozen-prefix cache does not fit: .* GB are needed in {tmp_path} "
                                            r"and .* GB are free; .*finetune.cache_memory_mb.*float16"):
        PrefixCache(split, many, to_input=never, batch_size=4, memory_limit_mb=0, scratch_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def train_both_ways(name: str, size: int, fraction: float, epochs: int = 3) -> list[dict]:
    """Train the full network, then the tail on the cache, from the same start on the same batches."""
    images, labels = gray_images(36, size), np.array([0, 1, 1] * 12)
    runs = []
    for cached in (False, True):
        seed_everything(0)
        model, _ = build_classifier(name, image_size=size, n_classes=2, weights="none",
                                    ft_fraction=fraction, head=HeadSettings(16, 0.5))
        before = [w.numpy().copy() for w in model.trainable_weights]
        with choose_training_path(model, images, model_name=name, batch_size=8,
                                  cache=PrefixCacheSettings(enabled=cached)) as path:
            assert path.description["path"] == ("frozen-prefix cache" if cached else "full network")
            compile_classifier(path.model, optimizer="adam", learning_rate=1e-3)
            seed_everything(1)
            fit_fold(path.model, path.batches(np.arange(22), labels, seed=2), path.batches(np.arange(22, 28), labels),
                     epochs=epochs, patience=5, class_weight=None, progress=keras.callbacks.Callback())
            runs.append({
                "probs": path.model.predict(path.batches(np.arange(28, 36)), verbose=0),
                "moved": [w.numpy() - b for w, b in zip(model.trainable_weights, before)],
            })
    return runs


@pytest.mark.parametrize("name, size, fraction", [
    ("VGG16", 32, 0.5),
    pytest.param("InceptionV3", 75, 0.15, marks=pytest.mark.slow),    # the multi-input cut; 30 s
])
def test_training_on_the_cache_gives_the_predictions_of_training_the_network(name, size, fraction):
    plain, cached = train_both_ways(name, size, fraction)
    np.testing.assert_allclose(cached["probs"], plain["probs"], rtol=0, atol=1e-3)
    # Every trained weight moved, and both ways moved it alike (to 1 % of the move).
    for a, b in zip(plain["moved"], cached["moved"]):
        assert np.abs(a).max() > 0
        assert np.abs(a - b).max() <= 0.01 * np.abs(a).max()
