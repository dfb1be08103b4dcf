"""Grad-CAM: the right layer of each network, and maps that point where the malignant score comes from."""

import keras
import numpy as np
import pytest

from ultrasound_transfer.choices import MODEL_MIN_SIZES, MODELS
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.deployment.gradcam import (
    EARLIER_LAYERS,
    GRADCAM_LAYERS,
    check_gradient_backend,
    grad_cam,
    gradcam_layer,
)
from ultrasound_transfer.networks.backbones import HIDDEN_LAYER, OUTPUT_LAYER, POOLED_LAYER, build_classifier
from ultrasound_transfer.settings import HeadSettings


@pytest.mark.parametrize("model_name", MODELS)
def test_each_network_is_explained_at_its_last_convolutional_block(model_name):
    assert set(GRADCAM_LAYERS) == set(EARLIER_LAYERS) == set(MODELS)
    size = max(MODEL_MIN_SIZES[model_name], 64)
    keras.utils.set_random_seed(0)
    network, _ = build_classifier(model_name, image_size=size, n_classes=2, weights="none", ft_fraction=0.15,
                                  head=HeadSettings(units=8, dropout=0.5, norm="standardize"))
    names = [layer.name for layer in network.layers]
    last = network.get_layer(GRADCAM_LAYERS[model_name])
    after = network.layers[names.index(last.name) + 1: names.index(POOLED_LAYER)]
    assert not any(isinstance(later, keras.layers.Conv2D) for later in after)     # nothing convolves after it
    layer = network.get_layer(gradcam_layer(network, model_name))
    assert len(layer.output.shape) == 4 and min(layer.output.shape[1:3]) >= 2
    assert (layer is last) == (min(last.output.shape[1:3]) >= 2)       # InceptionV3 at 75 px: mixed10 is 1 x 1
    images = np.random.default_rng(1).normal(0, 50, (2, size, size, 3)).astype(np.float32)
    maps = grad_cam(network, images, layer.name)
    assert maps.shape == (2, *layer.output.shape[1:3]) and np.isfinite(maps).all() and (maps >= 0).all()


def corner_network() -> keras.Model:
    """A network whose malignant score rises with brightness: a bright corner is where it looks."""
    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="last_conv")
    pooled = keras.layers.GlobalAveragePooling2D(name=POOLED_LAYER)(conv(inputs))
    hidden = keras.layers.Dense(4, activation="relu", name=HIDDEN_LAYER)
    output = keras.layers.Dense(2, activation="softmax", name=OUTPUT_LAYER)
    network = keras.Model(inputs, output(hidden(pooled)))
    conv.set_weights([np.full((3, 3, 3, 4), 1 / 27, np.float32), np.zeros(4, np.float32)])
    hidden.set_weights([np.eye(4, dtype=np.float32), np.zeros(4, np.float32)])
    output.set_weights([np.tile(np.array([[-1.0, 1.0]], np.float32), (4, 1)), np.zeros(2, np.float32)])
    return network


@pytest.mark.keras_backend
def test_the_map_lights_the_region_that_raises_the_malignant_score():
    if keras.backend.backend() not in ("tensorflow", "torch"):
        with pytest.raises(PipelineError, match="KERAS_BACKEND=tensorflow"):
            check_gradient_backend()
        return
    image = np.zeros((1, 32, 32, 3), np.float32)
    image[0, 2:10, 3:11] = 200.0
    (cam,) = grad_cam(corner_network(), image, "last_conv")
    assert cam[:12, :12].min() >= 0 and cam[2:10, 3:11].mean() > 0
    assert np.unravel_index(cam.argmax(), cam.shape) < (12, 12) and cam[16:, 16:].max() == 0


def test_an_overlay_name_fits_the_file_system_whatever_the_scans_name():
    from ultrasound_transfer.deployment.gradcam import picture_name
    from ultrasound_transfer.deployment.predict import SquaredFrame

    square = np.zeros((8, 8), np.float32)
    long_name = "x" * 246 + ".png"                       # a legal name: 250 bytes
    names = [picture_name(i, SquaredFrame(f"scans/{long_name}", frame, square, "")) for i, frame in ((1, 1), (2, 3))]
    assert all(len(name.encode()) <= 255 for name in names) and len(set(names)) == 2
    assert names[1].endswith("-frame3.png") and names[0].startswith("0001-xxx")
