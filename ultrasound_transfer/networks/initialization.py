"""Initial weights drawn with NumPy, so that every Keras backend starts from the same network.

Keras draws random initial weights with the backend's own generator
(TensorFlow's, PyTorch's, JAX's), so the same seed gives three different
networks, and after training predictions that differ by as much as chance
(on the demo, before this module: up to 0.96 in probability).  Redrawing
the random initial values here, with the same distributions Keras uses
(``VarianceScaling`` and its Glorot/He/LeCun forms, normal, uniform,
truncated normal), makes the starting point a function of the seed alone.
Constant initializers (zeros, ones: biases, batch-norm statistics) give the
same values everywhere and are left alone.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ultrasound_transfer.common import PipelineError

CONSTANT = (keras.initializers.Zeros, keras.initializers.Ones, keras.initializers.Constant)
# Keras' constant for a normal truncated at two standard deviations to keep the variance.
TRUNCATION_STDDEV_FACTOR = 0.87962566103423978


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Fan-in and fan-out of a kernel, as Keras counts them (convolutions: times the receptive field)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], mean: float, stddev: float) -> np.ndarray:
    """Normal values redrawn until all lie within two standard deviations of the mean."""
    values = rng.normal(0.0, 1.0, size=shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.normal(0.0, 1.0, size=int(outside.sum()))
        outside = np.abs(values) > 2.0
    return mean + stddev * values


def initial_value(initializer: keras.initializers.Initializer, shape: tuple[int, ...],
                  rng: np.random.Generator) -> np.ndarray:
    """A draw from ``initializer``'s distribution, made with ``rng``."""
    if isinstance(initializer, keras.initializers.VarianceScaling) and not (
            getattr(initializer, "input_axes", None) or getattr(initializer, "output_axes", None)):
        fan_in, fan_out = fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[initializer.mode]
        scale = initializer.scale / max(1.0, fan)
        if initializer.distribution == "truncated_normal":
            return truncated_normal(rng, shape, 0.0, math.sqrt(scale) / TRUNCATION_STDDEV_FACTOR)
        if initializer.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(scale), size=shape)
        limit = math.sqrt(3.0 * scale)
        return rng.uniform(-limit, limit, size=shape)
    if isinstance(initializer, keras.initializers.TruncatedNormal):
        return truncated_normal(rng, shape, initializer.mean, initializer.stddev)
    if isinstance(initializer, keras.initializers.RandomNormal):
        return rng.normal(initializer.mean, initializer.stddev, size=shape)
    if isinstance(initializer, keras.initializers.RandomUniform):
        return rng.uniform(initializer.minval, initializer.maxval, size=shape)
    raise PipelineError(
        f"initializer {type(initializer).__name__} has no NumPy counterpart in "
        "ultrasound_transfer/networks/initialization.py; add it there so every backend starts alike."
    )


def draw_initial_weights(layers: list[keras.layers.Layer], rng: np.random.Generator) -> int:
    """Redraw, with ``rng``, every randomly initialized variable of ``layers``; the count redrawn.

    A variable ``<name>`` of a layer is initialized by the layer's
    ``<name>_initializer`` (``kernel``, ``bias``, ``gamma``, ...), which is
    how Keras' own layers name them.
    """
    redrawn = 0
    for layer in layers:
        for variable in layer.weights:
            initializer = getattr(layer, f"{variable.name}_initializer", None)
            if initializer is None or isinstance(initializer, CONSTANT):
                continue
            shape = tuple(int(size) for size in variable.shape)
            variable.assign(initial_value(initializer, shape, rng).astype(variable.dtype))
            redrawn += 1
    return redrawn
