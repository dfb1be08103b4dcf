"""The ONNX ensemble assembled from its parts, on small networks whose tails read two tensors of the front."""

import keras
import numpy as np
import onnxruntime
import pytest

from ultrasound_transfer.deployment.export import write_onnx
from ultrasound_transfer.deployment.trained import EnsembleParts, ensemble_network


def two_tensor_parts(size: int, n_splits: int) -> EnsembleParts:
    """A front with two outputs (as a cut inside a residual block gives) and tails that join them."""
    keras.utils.set_random_seed(0)
    gray = keras.Input((size, size), name="gray")
    x = keras.layers.Rescaling(1 / 255)(keras.layers.Reshape((size, size, 1))(gray))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    b = keras.layers.Conv2D(4, 3, padding="same")(a)
    front = keras.Model(gray, {"cut0": a, "cut1": b}, name="tiny_front")
    tails = []
    for k in range(1, n_splits + 1):
        inputs = [keras.Input((size, size, 4), name=f"cut{i}") for i in range(2)]
        # Not symmetric in its inputs, so that cut0 and cut1 swapped would show.
        joined = keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()(inputs))
        dense = keras.layers.Dense(2, activation="softmax")(joined)[:, 1:2]
        svm = keras.layers.Dense(1, activation="sigmoid")(joined)
        novelty = keras.layers.Dense(1, activation="relu")(joined)
        tails.append(keras.Model(inputs, {"dense": dense, "svm": svm, "novelty": novelty}, name=f"split{k}"))
    return EnsembleParts(front, tails)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the ONNX export is checked on TensorFlow")
def test_the_assembled_onnx_graph_gives_the_keras_ensembles_outputs(tmp_path):
    parts = two_tensor_parts(size=16, n_splits=3)
    (tmp_path / "scratch").mkdir()
    write_onnx(parts, tmp_path / "ensemble.onnx", image_size=16, scratch=tmp_path / "scratch")
    assert not list((tmp_path / "scratch").iterdir())            # the parts' files are removed
    gray = np.random.default_rng(1).uniform(0, 255, (5, 16, 16)).astype(np.float32)
    expected = ensemble_network(parts).predict(gray, verbose=0)
    session = onnxruntime.InferenceSession(str(tmp_path / "ensemble.onnx"))
    names = ["dense", "svm", "dense_splits", "svm_splits", "novelty"]
    for name, got in zip(names, session.run(names, {"gray": gray})):
        assert got.shape == expected[name].shape
        assert np.abs(got - expected[name]).max() < 1e-5, name
    assert not np.allclose(expected["dense_splits"][:, 0], expected["dense_splits"][:, 1])   # the splits differ
