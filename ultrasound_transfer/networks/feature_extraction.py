"""Layer outputs under each fold's network, through one reader per unit, paying for the frozen part once.

A :class:`LayerReader` gives a network's layers for rows of the inputs that
feed it: the images, or the frozen prefix's cached outputs.  ``finetune``
reads through its training path (the cache it trains on): the pooled
features of each fold's fit images for the head's standardization
(:func:`standardize_head_input`) and, after training, the SVM's feature
layers of every image.  ``external`` reads another dataset's images through
the fold networks (:func:`layers_pass`): the prefix runs once over all of
them (:class:`~ultrasound_transfer.networks.frozen_prefix.PrefixCache`) and
each fold runs only its trained tail up to the layers asked for.  At
``ft_fraction = 0`` the pooled features are the cached tensor itself; with
nothing frozen (``ft_fraction = 1``) the reader runs the whole network.

Every fold reads the same layers of the same network, only under other
weights, so one reader serves them all: its Keras model is made once and
reads whatever weights the network holds when called.  Made per read, as
before, it was built and traced (on JAX compiled) twice a fold.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np

from ultrasound_transfer.networks.backbones import HEAD_NORM_LAYER, POOLED_LAYER, to_network_input
from ultrasound_transfer.networks.frozen_prefix import (
    PrefixCache,
    has_frozen_part,
    model_upto,
    split_at_frozen_prefix,
)
from ultrasound_transfer.networks.training_paths import TrainingPath, as_float32, predict_rows
from ultrasound_transfer.settings import PrefixCacheSettings


class LayerReader:
    """The outputs of ``network``'s layers ``names`` for rows of ``inputs``, under the network's current weights.

    ``inputs`` feed the network from the layers ``cut`` (their cached outputs,
    one array each) or, with ``cut`` empty, are its own input; ``prepare``
    turns their rows into what the model takes.  A layer of ``cut`` is read
    from its array; the others come from one model from ``cut`` to them,
    made here (:func:`~ultrasound_transfer.networks.frozen_prefix.model_upto`),
    in batches of ``batch_size`` (:func:`~ultrasound_transfer.networks.training_paths.predict_rows`:
    whole ones where the model's predictions are compiled).
    """

    def __init__(self, network: keras.Model, names: list[str], *, cut: list[str], inputs: list[np.ndarray],
                 prepare: Callable[[np.ndarray], np.ndarray], batch_size: int) -> None:
        self.network, self.names, self.cut, self.inputs = network, list(names), list(cut), inputs
        self.prepare, self.batch_size = prepare, batch_size
        computed = [name for name in self.names if name not in self.cut]
        self.model = model_upto(network, self.cut, computed) if computed else None

    @classmethod
    def through(cls, path: TrainingPath, network: keras.Model, names: list[str]) -> LayerReader:
        """A reader of ``network``'s layers ``names`` through the training path ``path`` (its cache, if any)."""
        return cls(network, names, cut=path.description.get("cached_layers", []), inputs=path.inputs,
                   prepare=path.prepare, batch_size=path.batch_size)

    def __call__(self, rows: np.ndarray | None = None) -> list[np.ndarray]:
        """One float32 array per layer of ``names``, for ``rows`` (all rows by default), in their order."""
        rows = np.arange(len(self.inputs[0])) if rows is None else np.asarray(rows)
        fresh = iter(predict_rows(self.model, self.inputs, rows, batch_size=self.batch_size, prepare=self.prepare)
                     if self.model is not None else [])
        return [np.asarray(self.inputs[self.cut.index(name)][rows], dtype=np.float32) if name in self.cut
                else next(fresh) for name in self.names]


def standardize_head_input(network: keras.Model, reader: LayerReader, rows: np.ndarray) -> bool:
    """Fit the head's standardization (if the network has one) to the pooled features of ``rows``.

    ``reader`` reads ``network``'s pooled layer (among others).  Each feature
    is centred on its mean over ``rows``; all are divided by one common
    standard deviation (the root of the mean per-feature variance), so the
    head sees unit scale without the features that barely vary (dead units of
    a random network) being blown up.  ``rows`` are the images the fold trains
    on, never its validation or test images; the values stay fixed while the
    fold trains and are kept in its fold file.  Returns whether there was a
    standardization to fit.
    """
    if HEAD_NORM_LAYER not in {layer.name for layer in network.layers}:
        return False
    if reader.network is not network or POOLED_LAYER not in reader.names:
        raise ValueError(f"standardize_head_input needs a reader of {network.name}'s layer {POOLED_LAYER!r}; "
                         f"this one reads {reader.names} of {reader.network.name}")
    pooled = reader(rows)[reader.names.index(POOLED_LAYER)].astype(np.float64)
    spread = math.sqrt(float(pooled.var(axis=0).mean())) or 1.0
    norm = network.get_layer(HEAD_NORM_LAYER)
    norm.mean.assign(pooled.mean(axis=0).astype(np.float32))
    norm.scale.assign(np.full(pooled.shape[1], 1.0 / spread, dtype=np.float32))
    return True


@contextlib.contextmanager
def layers_pass(
    model: keras.Model,
    images: np.ndarray,
    *,
    layer_names: list[str],
    model_name: str,
    batch_size: int,
    preprocessing: str = "keras",
    cache: PrefixCacheSettings = PrefixCacheSettings(),
    scratch_dir: Path | str | None = None,
) -> Iterator[LayerReader]:
    """Yield a :class:`LayerReader` of ``model``'s ``layer_names`` for ``images`` (all of them when called bare).

    Load a fold's weights into ``model``, call the reader, repeat; the
    frozen prefix ran once, when the block was entered (always: ``cache.enabled``
    concerns training only).  A layer the prefix ends at is read from the cache.
    """
    to_input = lambda batch: to_network_input(batch, model_name, preprocessing=preprocessing)  # noqa: E731
    if not has_frozen_part(model):
        yield LayerReader(model, layer_names, cut=[], inputs=[images], prepare=to_input, batch_size=batch_size)
        return
    split = split_at_frozen_prefix(model)
    with PrefixCache(split, images, to_input=to_input, batch_size=batch_size, dtype=cache.dtype,
                     memory_limit_mb=cache.memory_mb, scratch_dir=scratch_dir) as prefix:
        yield LayerReader(model, layer_names, cut=split.cut, inputs=prefix.arrays, prepare=as_float32,
                          batch_size=batch_size)
