import keras
import numpy as np
import pytest

from ultrasound_transfer.networks.augmentation import Augmentation
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.networks.backbones import build_classifier
from ultrasound_transfer.networks.training import (
    EpochLog, FoldBatches, FoldReset, check_data_parallel_supported, class_weights, compile_classifier,
    data_parallel_scope, fit_fold, gpu_devices, inner_validation_split, seed_everything, set_precision,
)

pytestmark = pytest.mark.keras_backend


def small_model():
    seed_everything(0)
    model, _ = build_classifier("VGG16", 32, 2, "none", 8, 0.5, 0.15)
    compile_classifier(model, "adam", 1e-3)
    return model


def train_once(model, x, y):
    seed_everything(5)
    rows = np.arange(len(y))
    fit_fold(model, FoldBatches([x], rows, 4, y, seed=5), FoldBatches([x], rows[:4], 4, y), 2, 1, None,
             EpochLog("test", "fold", 2))
    return [v.numpy().copy() for v in model.variables]


def test_fold_reset_makes_training_repeat_bit_for_bit():
    x = np.random.default_rng(0).normal(size=(12, 32, 32, 3)).astype("float32")
    y = np.array([0, 1] * 6)
    model = small_model()
    reset = FoldReset(model)
    learning_rate = float(model.optimizer.learning_rate.numpy())
    first = train_once(model, x, y)
    reset.restore()
    assert float(model.optimizer.learning_rate.numpy()) == learning_rate
    assert int(model.optimizer.iterations.numpy()) == 0
    second = train_once(model, x, y)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, reset.model_values))


def first_steps(backbone_lr_factor, x, y, layers):
    """What one training step, then another after a FoldReset, changed in ``layers``' kernels."""
    seed_everything(0)
    model, _ = build_classifier("VGG16", 32, 2, "none", 8, 0.0, 0.15)
    compile_classifier(model, "adam", 1e-3, backbone_lr_factor=backbone_lr_factor)
    reset = FoldReset(model)
    before = [model.get_layer(name).kernel.numpy().copy() for name in layers]
    steps = []
    for _ in range(2):
        model.train_on_batch(x, y)
        steps.append([model.get_layer(name).kernel.numpy() - start for name, start in zip(layers, before)])
        reset.restore()
    return model, steps


def test_backbone_layers_learn_at_the_factor_of_the_heads_rate():
    x = np.random.default_rng(1).normal(size=(8, 32, 32, 3)).astype("float32")
    y = np.array([0, 1] * 4)
    layers = ("head_dense", "predictions", "block5_conv3")
    plain, (one_rate, _) = first_steps(1.0, x, y, layers)
    assert isinstance(plain.optimizer, keras.optimizers.Adam)
    split, (two_rates, after_reset) = first_steps(0.1, x, y, layers)
    assert isinstance(split.optimizer, keras.optimizers.MultiOptimizer)
    # Same gradients in the first step: the head's steps are unchanged, the backbone's a tenth.
    for name, a, b in zip(layers, one_rate, two_rates):
        assert np.abs(b).max() > 0, name
        assert np.allclose(b, a * (0.1 if name.startswith("block") else 1.0), rtol=1e-4, atol=1e-9), name
    # FoldReset puts both optimizers' states back.
    assert all(np.array_equal(a, b) for a, b in zip(two_rates, after_reset))


def test_inner_validation_split_is_grouped_stratified_and_inside_training_part():
    labels = np.repeat([0, 1] * 10, 3)
    groups = np.repeat(np.arange(20), 3)
    fit, val = inner_validation_split(labels, groups, 0.2, seed=0)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(labels)
    assert not set(groups[fit]) & set(groups[val])
    assert set(labels[val]) == {0, 1}
    assert len(inner_validation_split(labels, groups, 0.0, seed=0)[1]) == 0


def test_inner_validation_split_needs_enough_groups():
    with pytest.raises(PipelineError, match="validation_fraction"):
        inner_validation_split(np.array([0, 0, 1, 1]), np.array([1, 2, 3, 4]), 0.2, seed=0)


def test_balanced_class_weights():
    assert class_weights(np.array([0, 0, 0, 1]), "none") is None
    weights = class_weights(np.array([0, 0, 0, 1]), "balanced")
    assert weights[1] == pytest.approx(3 * weights[0])


def test_fold_batches_reshuffle_every_epoch_and_repeat_with_the_seed():
    x, y = np.arange(10)[:, None] * 1.0, np.arange(10) % 2
    rows = np.array([0, 2, 3, 5, 7, 8, 9])

    def epochs(batches, n=3):
        seen = []
        for _ in range(n):
            seen.append(np.concatenate([batches[i][0][:, 0] for i in range(len(batches))]).astype(int))
            batches.on_epoch_end()
        return seen

    first = epochs(FoldBatches([x], rows, 3, y, seed=1))
    assert all(sorted(e) == list(rows) for e in first)              # every row once per epoch
    assert not np.array_equal(first[0], first[1])                     # a new order each epoch
    assert all(np.array_equal(a, b) for a, b in zip(first, epochs(FoldBatches([x], rows, 3, y, seed=1))))
    assert np.array_equal(epochs(FoldBatches([x], rows, 3), 1)[0], rows)   # no seed: in order, for predict
    assert len(FoldBatches([x], rows, 3)[0]) == 1                    # inputs only, without labels


def test_fold_batches_feed_several_inputs_and_augment_reproducibly():
    images = np.random.default_rng(0).integers(0, 255, size=(6, 16, 16), dtype=np.uint8)
    other = np.arange(6, dtype=np.float16)[:, None]
    (a, b), labels = FoldBatches([images, other], np.arange(6), 6, np.zeros(6), seed=3, prepare=np.float32)[0]
    assert a.dtype == b.dtype == np.float32 and np.array_equal(a, images[b[:, 0].astype(int)])

    strong = Augmentation(flip=0.5, rotate_deg=10, shift=0.1, scale=0.1, gain=0.2, speckle=0.2)
    first = FoldBatches([images], np.arange(6), 3, np.zeros(6), seed=3, augmentation=strong)
    again = FoldBatches([images], np.arange(6), 3, np.zeros(6), seed=3, augmentation=strong)
    assert np.array_equal(first[1][0], again[1][0])
    assert not np.array_equal(first[1][0], images[first.order[3:]])
    before = first[1][0]
    first.on_epoch_end()
    again.on_epoch_end()
    assert np.array_equal(first[1][0], again[1][0]) and not np.array_equal(first[1][0], before)


def test_speed_settings_are_checked():
    with pytest.raises(PipelineError, match="finetune.precision = 'float8'"):
        set_precision("float8")
    with pytest.raises(PipelineError, match="finetune.jit_compile = 'yes'"):
        compile_classifier(small_model(), "adam", 1e-3, jit_compile="yes")
    set_precision("mixed_bfloat16")
    try:
        model, _ = build_classifier("VGG16", 32, 2, "none", 8, 0.5, 0.15)
        assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
        assert model.get_layer("predictions").compute_dtype == "float32"   # the softmax stays float32
    finally:
        set_precision("float32")


def test_data_parallel_says_what_it_does_with_the_gpus_this_machine_has(capsys):
    if keras.backend.backend() == "torch":
        pytest.skip("PyTorch has no keras.distribution: see the test below")
    gpus = gpu_devices()
    with data_parallel_scope(True):
        pass
    shown = capsys.readouterr().out
    if len(gpus) < 2:
        assert f"data_parallel: {len(gpus)} GPU(s) found, nothing to split; training on one device" in shown
    else:      # a multi-GPU workstation: the backend's own strategy over all of them
        assert f"over {len(gpus)} GPUs" in shown


def test_data_parallel_is_refused_before_any_work_where_the_backend_has_no_api_for_it():
    check_data_parallel_supported(False)
    if keras.backend.backend() != "torch":
        check_data_parallel_supported(True)
        return
    with pytest.raises(PipelineError, match="not supported on the torch backend.*KERAS_BACKEND=tensorflow or jax"):
        check_data_parallel_supported(True)
    with pytest.raises(PipelineError, match="data_parallel: false"):
        with data_parallel_scope(True):
            pytest.fail("the block must not run")


def test_gpu_devices_answers_on_every_backend():
    assert all(isinstance(device, str) for device in gpu_devices())
