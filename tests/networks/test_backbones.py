import keras
import numpy as np
import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.networks.backbones import (
    BACKBONES,
    build_backbone,
    build_classifier,
    check_image_size,
    feature_extractor,
    freeze_all_but_last,
    layers_to_train,
    to_network_input,
)
from ultrasound_transfer.networks.fitting import compile_classifier
from ultrasound_transfer.settings import HeadSettings

pytestmark = pytest.mark.keras_backend

# Weight-carrying layers of each backbone: convolutions (+ batch norms where the
# architecture has them), straight from the published architectures.
ARCHITECTURE_LAYERS = {"VGG16": 13, "VGG19": 16, "ResNet50": 53 * 2, "ResNet101": 104 * 2, "InceptionV3": 94 * 2}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_layer_counts_at_default_ft_fraction(name):
    backbone = build_backbone(name, 96, "none")
    report = freeze_all_but_last(backbone, 0.15)
    total = ARCHITECTURE_LAYERS[name]
    assert report.total_layers == total
    assert report.trained_layers == int(np.floor(0.15 * total + 0.5))
    trained = [layer for layer in backbone.layers if layer.weights and layer.trainable]
    assert len(trained) == report.trained_layers
    assert trained[0].name == report.first_trained_layer
    assert report.trainable_params == sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)


def test_rounding_edges():
    assert layers_to_train(13, 0.0) == 0
    assert layers_to_train(13, 1.0) == 13
    assert layers_to_train(10, 0.15) == 2      # 1.5 rounds up, not to even
    assert layers_to_train(13, 0.15) == 2


def test_frozen_weights_stay_bit_identical_and_trained_ones_change():
    keras.utils.set_random_seed(0)
    model, report = build_classifier("ResNet50", image_size=32, n_classes=2, weights="none",
                                     ft_fraction=0.15, head=HeadSettings(8, 0.0))
    compile_classifier(model, optimizer="adam", learning_rate=1e-2)
    frozen = [v for layer in model.layers if not layer.trainable for v in layer.weights]
    trained = model.trainable_weights
    before_frozen = [v.numpy().copy() for v in frozen]
    before_trained = [v.numpy().copy() for v in trained]
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    model.fit(x, np.array([0, 1] * 4), epochs=2, batch_size=4, verbose=0)
    # Frozen layers, batch-norm moving statistics included, are untouched ...
    frozen_layers = [layer for layer in model.layers if layer.weights and not layer.trainable]
    assert len(frozen_layers) == report.total_layers - report.trained_layers == 90
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before_frozen, frozen))
    # ... and every trained weight moved.
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before_trained, trained))
    assert model.get_layer(report.first_trained_layer).trainable


def test_image_size_too_small_names_model_and_minimum():
    with pytest.raises(PipelineError, match=r"image_size = 64 is too small for InceptionV3.*at least 75"):
        check_image_size("InceptionV3", 64)
    check_image_size("VGG16", 32)


def test_unknown_model_lists_known_ones():
    with pytest.raises(PipelineError, match=r"'ResNet18'.*VGG16, VGG19, ResNet50, ResNet101, InceptionV3"):
        build_backbone("ResNet18", 96, "none")


def test_weights_file_loads_and_missing_file_is_an_error(tmp_path):
    keras.utils.set_random_seed(1)
    source = build_backbone("VGG16", 64, "none")
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = build_backbone("VGG16", 32, str(path))   # other input size: conv weights still fit
    assert all(np.array_equal(a, b) for a, b in zip(source.get_weights(), loaded.get_weights()))
    with pytest.raises(PipelineError, match="no such file"):
        build_backbone("VGG16", 32, str(tmp_path / "missing.weights.h5"))


def test_feature_extractor_shares_weights_and_outputs_pooled_features():
    model, _ = build_classifier("VGG16", image_size=32, n_classes=2, weights="none",
                                ft_fraction=0.0, head=HeadSettings(8, 0.5))
    x = to_network_input(np.zeros((2, 32, 32), np.uint8), "VGG16")
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32
    assert feature_extractor(model, "pooled").predict(x, verbose=0).shape == (2, 512)
    assert feature_extractor(model, "head").predict(x, verbose=0).shape == (2, 8)


def test_trained_batch_norm_in_inference_mode_keeps_its_statistics_and_trains_scale():
    from ultrasound_transfer.networks.backbones import set_batch_norm_mode

    x = np.random.default_rng(0).normal(2.0, 3.0, size=(16, 32, 32, 3)).astype("float32")
    y = np.arange(16) % 2
    for mode, statistics_move in (("training", True), ("inference", False)):
        model, _ = build_classifier("ResNet50", image_size=32, n_classes=2, weights="none",
                                    ft_fraction=0.05, head=HeadSettings(8, 0.5), batch_norm=mode)
        norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
                 and layer.trainable]
        assert norms
        before = [[np.asarray(v).copy() for v in layer.weights] for layer in norms]
        compile_classifier(model, optimizer="sgd", learning_rate=0.01)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        after = [[np.asarray(v) for v in layer.weights] for layer in norms]
        gamma_moved = any(not np.array_equal(b[0], a[0]) for b, a in zip(before, after))
        mean_moved = any(not np.array_equal(b[2], a[2]) for b, a in zip(before, after))
        assert gamma_moved and mean_moved == statistics_move, mode
    assert set_batch_norm_mode(model, "training") == len(norms)
    with pytest.raises(PipelineError, match="finetune.batch_norm"):
        set_batch_norm_mode(model, "frozen")


def test_each_declared_input_preprocessing_feeds_what_its_name_says():
    from ultrasound_transfer.networks.backbones import to_network_input

    gray = np.array([[[0, 255]]], dtype=np.uint8)
    assert np.allclose(to_network_input(gray, "ResNet50", preprocessing="unit")[0, 0], [[0, 0, 0], [1, 1, 1]])
    assert np.allclose(to_network_input(gray, "ResNet50", preprocessing="tf")[0, 0], [[-1, -1, -1], [1, 1, 1]])
    torch_mean, torch_std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    assert np.allclose(to_network_input(gray, "ResNet50", preprocessing="torch")[0, 0, 0], -torch_mean / torch_std)
    caffe = to_network_input(gray, "VGG16", preprocessing="caffe")[0, 0, 0]
    assert np.allclose(caffe, [-103.939, -116.779, -123.68])        # BGR, ImageNet means subtracted
    assert np.allclose(to_network_input(gray, "VGG16", preprocessing="caffe_over_255")[0, 0, 0], caffe / 255)
    # keras: the network's own; for InceptionV3 that is tf's -1..1, for ResNet50 caffe's.
    as_tf = to_network_input(gray, "VGG16", preprocessing="tf")
    assert np.allclose(to_network_input(gray, "InceptionV3")[0, 0], as_tf[0, 0])
    assert np.allclose(to_network_input(gray, "ResNet50")[0, 0, 0], caffe)
