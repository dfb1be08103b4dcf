import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import REPO
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.networks.backbones import build_classifier
from ultrasound_transfer.networks.initialization import draw_initial_weights, fans, initial_value
from ultrasound_transfer.networks.runtime import seed_everything
from ultrasound_transfer.settings import HeadSettings

# The cross-backend test at the end starts one process per backend itself, so it runs
# once (CI: in the TensorFlow run, with torch and jax installed); the others run on each.


def test_fans_count_the_receptive_field_of_convolutions():
    assert fans((3, 3, 16, 32)) == (144, 288)
    assert fans((100, 10)) == (100, 10)
    assert fans((7,)) == (7, 7)


@pytest.mark.keras_backend
def test_glorot_uniform_draws_match_keras_limits():
    rng = np.random.default_rng(0)
    values = initial_value(keras.initializers.GlorotUniform(), (3, 3, 64, 64), rng)
    limit = np.sqrt(6 / (576 + 576))
    assert np.abs(values).max() <= limit and np.abs(values).max() > 0.99 * limit
    assert values.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
    he = initial_value(keras.initializers.HeNormal(), (400, 300), rng)
    assert np.abs(he).max() <= 2 * np.sqrt(2 / 400) / 0.87962566103423978 + 1e-12
    assert he.std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)


@pytest.mark.keras_backend
def test_redraw_touches_random_variables_only_and_follows_the_generator():
    layer = keras.layers.Dense(4, bias_initializer="zeros")
    layer.build((None, 3))
    draw_initial_weights([layer], np.random.default_rng(5))
    assert np.array_equal(layer.bias.numpy(), np.zeros(4))
    expected = initial_value(layer.kernel_initializer, (3, 4), np.random.default_rng(5)).astype("float32")
    assert np.array_equal(layer.kernel.numpy(), expected)


@pytest.mark.keras_backend
def test_an_initializer_without_numpy_counterpart_is_named():
    layer = keras.layers.Dense(4, kernel_initializer="orthogonal")
    layer.build((None, 3))
    with pytest.raises(PipelineError, match="OrthogonalInitializer|Orthogonal"):
        draw_initial_weights([layer], np.random.default_rng(0))


@pytest.mark.keras_backend
def test_the_same_seed_builds_the_same_network():
    def weights():
        seed_everything(3)
        model, _ = build_classifier("VGG16", image_size=32, n_classes=2, weights="none",
                                    ft_fraction=0.15, head=HeadSettings(8, 0.5))
        return [v.numpy() for v in model.weights]

    first, second = weights(), weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


SAVE_INITIAL_WEIGHTS = """
import sys, numpy as np
from ultrasound_transfer.networks.backbones import build_classifier
from ultrasound_transfer.networks.runtime import seed_everything
from ultrasound_transfer.settings import HeadSettings
seed_everything(0)
model, _ = build_classifier("VGG16", image_size=32, n_classes=2, weights="none",
                            ft_fraction=0.15, head=HeadSettings(8, 0.5))
np.savez(sys.argv[1], *[v.numpy() for v in model.weights])
"""


@pytest.mark.slow
def test_every_installed_backend_starts_from_the_same_network(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("runs every backend in a process of its own: once, in the TensorFlow run, is enough")
    backends = [name for name in ("tensorflow", "torch", "jax") if importlib.util.find_spec(name) is not None]
    if len(backends) < 2:
        pytest.skip('one Keras backend installed: nothing to compare (pip install -e ".[torch,jax]")')
    saved = {}
    for backend in backends:
        path = tmp_path / f"{backend}.npz"
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", SAVE_INITIAL_WEIGHTS, str(path)], env=env, check=True,
                       capture_output=True)
        with np.load(path) as arrays:
            saved[backend] = [arrays[key] for key in sorted(arrays.files, key=lambda k: int(k.split("_")[1]))]
    reference = saved[backends[0]]
    for backend in backends[1:]:
        assert len(saved[backend]) == len(reference)
        assert all(np.array_equal(a, b) for a, b in zip(reference, saved[backend])), backend
