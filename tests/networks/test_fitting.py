import keras
import numpy as np
import pytest

from ultrasound_transfer.networks.backbones import build_classifier
from ultrasound_transfer.networks.fitting import EpochLog, FoldReset, class_weights, compile_classifier, fit_fold
from ultrasound_transfer.networks.runtime import seed_everything
from ultrasound_transfer.networks.training_paths import FoldBatches
from ultrasound_transfer.settings import HeadSettings

pytestmark = pytest.mark.keras_backend


def small_model():
    seed_everything(0)
    model, _ = build_classifier("VGG16", image_size=32, n_classes=2, weights="none",
                                ft_fraction=0.15, head=HeadSettings(8, 0.5))
    compile_classifier(model, optimizer="adam", learning_rate=1e-3)
    return model


def train_once(model, x, y):
    seed_everything(5)
    rows = np.arange(len(y))
    fit_fold(model, FoldBatches([x], rows, 4, labels=y, seed=5), FoldBatches([x], rows[:4], 4, labels=y),
             epochs=2, patience=1, class_weight=None, progress=EpochLog("test", "fold", 2))
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
    model, _ = build_classifier("VGG16", image_size=32, n_classes=2, weights="none",
                                ft_fraction=0.15, head=HeadSettings(8, 0.0))
    compile_classifier(model, optimizer="adam", learning_rate=1e-3, backbone_lr_factor=backbone_lr_factor)
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


def test_balanced_class_weights():
    assert class_weights(np.array([0, 0, 0, 1]), "none") is None
    weights = class_weights(np.array([0, 0, 0, 1]), "balanced")
    assert weights[1] == pytest.approx(3 * weights[0])


def test_every_optimizer_choice_builds():
    from ultrasound_transfer.choices import OPTIMIZERS
    from ultrasound_transfer.networks.fitting import OPTIMIZERS as BUILT
    from ultrasound_transfer.networks.fitting import make_optimizer

    assert tuple(BUILT) == OPTIMIZERS
    assert make_optimizer("sgd", 0.01).momentum == 0.9


def test_values_outside_the_choices_are_refused_not_read_as_another():
    from ultrasound_transfer.common import PipelineError

    with pytest.raises(PipelineError, match="finetune.jit_compile = 'yes'"):
        compile_classifier(small_model(), optimizer="adam", learning_rate=1e-3, jit_compile="yes")
    with pytest.raises(PipelineError, match="finetune.class_weight = 'auto'"):
        class_weights(np.array([0, 1]), "auto")


def test_on_tensorflow_the_folds_batches_feed_tf_data_and_train_bit_for_bit_as_the_py_dataset_did(tmp_path):
    """fit_fold reads FoldBatches through tf.data on TensorFlow (no Python call per batch), from tensors or, for a
    memory-mapped cache, batch by batch; the network it trains, with early stopping and class weights, is the one
    that Keras' fit on the PyDataset itself trains."""
    x = np.random.default_rng(1).normal(size=(20, 32, 32, 3)).astype("float32")
    y = np.array([0, 1] * 10)
    rows = np.arange(16)
    batches = FoldBatches([x], rows, 4, labels=y, seed=5)
    if keras.backend.backend() != "tensorflow":
        assert batches.as_tf_dataset(2) is None
        return
    memory_mapped = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype="float32", shape=x.shape)
    memory_mapped[:] = x
    assert batches.fits_in_the_graph()
    assert not FoldBatches([memory_mapped], rows, 4, labels=y, seed=5).fits_in_the_graph()
    trained = {}
    for feed, images in (("tf.data", x), ("tf.data, memory-mapped", memory_mapped), ("PyDataset", x)):
        model = small_model()
        seed_everything(5)
        train = FoldBatches([images], rows, 4, labels=y, seed=5)
        validation = FoldBatches([images], np.arange(16, 20), 4, labels=y)
        if feed.startswith("tf.data"):
            history = fit_fold(model, train, validation, epochs=3, patience=1, class_weight={0: 1.0, 1: 2.0},
                               progress=keras.callbacks.Callback())
        else:
            stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
            history = model.fit(train, validation_data=validation, epochs=3, shuffle=False,
                                class_weight={0: 1.0, 1: 2.0}, callbacks=[stop], verbose=0).history
        trained[feed] = (history["val_loss"], [v.numpy().copy() for v in model.variables])
    for feed in ("tf.data", "tf.data, memory-mapped"):
        assert trained[feed][0] == trained["PyDataset"][0], feed
        assert all(np.array_equal(a, b) for a, b in zip(trained[feed][1], trained["PyDataset"][1])), feed
