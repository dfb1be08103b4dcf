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
def test_a_layers_pass_reads_what_the_whole_network_computes_for_every_fold(name, fraction, layer):
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


@pytest.mark.parametrize("fraction", [0.15, 1.0])      # the cached tail; the whole network (nothing frozen)
def test_one_reader_through_the_training_path_serves_every_fold_under_its_weights(fraction):
    from ultrasound_transfer.networks.feature_extraction import LayerReader
    from ultrasound_transfer.networks.training_paths import choose_training_path

    model = seeded_classifier(fraction)
    images = gray_images(10, 32)
    names = list(FEATURE_LAYERS.values())
    whole = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    rows = np.array([7, 1, 4, 9, 2])
    with choose_training_path(model, images, model_name="ResNet50", batch_size=4) as path:
        reader = LayerReader.through(path, model, names)
        made = reader.model
        for _fold in range(2):
            imitate_training(model)
            # In the reader's batches; perturbed weights take these activations to about 1e10, so a small
            # element's float32 rounding is judged against its layer's scale (eager PyTorch moved one by 4e-4).
            expected = whole.predict(to_network_input(images[rows], "ResNet50"), batch_size=reader.batch_size,
                                     verbose=0)
            for got, want in zip(reader(rows), expected, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
        assert reader.model is made                 # made once, read under each fold's weights


def test_the_head_is_standardized_only_through_a_reader_of_the_pooled_layer():
    from ultrasound_transfer.networks.backbones import build_classifier
    from ultrasound_transfer.networks.feature_extraction import LayerReader, standardize_head_input
    from ultrasound_transfer.networks.training_paths import choose_training_path
    from ultrasound_transfer.settings import HeadSettings

    model, _ = build_classifier("ResNet50", image_size=32, n_classes=2, weights="none", ft_fraction=0.15,
                                head=HeadSettings(8, 0.5, norm="standardize"))
    with choose_training_path(model, gray_images(8, 32), model_name="ResNet50", batch_size=4) as path:
        with pytest.raises(ValueError, match="'pooled'"):
            standardize_head_input(model, LayerReader.through(path, model, [FEATURE_LAYERS["head"]]), np.arange(6))
        assert standardize_head_input(model, LayerReader.through(path, model, list(FEATURE_LAYERS.values())),
                                      np.arange(6))
    norm = model.get_layer("head_norm")
    assert np.abs(np.asarray(norm.mean)).sum() > 0 and np.all(np.asarray(norm.scale) > 0)


def test_on_jax_every_fold_reads_through_one_compiled_prediction_per_model():
    # Made per read and fed last batches of new sizes, the demo's ResNet50 unit compiled 24 prediction steps on
    # JAX over its five folds (a compilation of the tail each time); now one per model the unit predicts with.
    if keras.backend.backend() != "jax":
        pytest.skip("counts JAX's compilations")
    import jax

    from ultrasound_transfer.networks.feature_extraction import LayerReader, standardize_head_input
    from ultrasound_transfer.networks.training_paths import choose_training_path

    compiled = []

    def count(event, duration, **details):
        if event == "/jax/core/compile/backend_compile_duration" and "predict_step" in details.get("fun_name", ""):
            compiled.append(details["fun_name"])

    model = seeded_classifier(0.15)
    with choose_training_path(model, gray_images(12, 32), model_name="ResNet50", batch_size=4) as path:
        reader = LayerReader.through(path, model, list(FEATURE_LAYERS.values()))
        jax.monitoring.register_event_duration_secs_listener(count)     # after the prefix pass, as a fold is
        try:
            for fit, test in [(np.arange(5), np.arange(9, 12)), (np.arange(6), np.arange(10, 12)),
                              (np.arange(7), np.arange(8, 12))]:        # three folds, sizes all different
                standardize_head_input(model, reader, fit)
                path.predict(test)
                reader()
        finally:
            jax.monitoring.unregister_event_duration_listener(count)
    assert len(compiled) == 2, compiled            # the tail's prediction and the reader's, once each
