import keras
import numpy as np
import pytest

from tests.networks.test_fold_weights import imitate_training, seeded_classifier
from tests.networks.test_frozen_prefix import gray_images
from ultrasound_transfer.networks.backbones import FEATURE_LAYERS, OUTPUT_LAYER, to_network_input
from ultrasound_transfer.networks.feature_extraction import layers_pass

pytestmark = pytest.mark.keras_backend


@pytest.mark.parametrize("name, fraction, layer", [
    ("ResNet50", 0.0, "pooled"),     # the pooled features are the cache itself
    ("ResNet50", 0.15, "pooled"),    # two-tensor cut inside a residual block
    ("VGG16", 0.5, "head"),          # the head's hidden layer
    ("VGG16", 1.0, "pooled"),        # nothing frozen: the whole network per fold
])
def test_layer_outputs_equal_the_whole_network_for_every_fold(name, fraction, layer):
    model = seeded_classifier(fraction, name=name)
    images = gray_images(10, 32)
    names = [FEATURE_LAYERS[layer], OUTPUT_LAYER]
    whole = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    with layers_pass(model, images, layer_names=names, model_name=name, batch_size=4) as outputs_now:
        for _fold in range(2):                     # a second fold: new trained weights, same prefix
            imitate_training(model)
            expected = whole.predict(to_network_input(images, name), verbose=0)
            for got, want in zip(outputs_now(), expected, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
