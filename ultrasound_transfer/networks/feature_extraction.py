"""Features of every image under each fold's network, paying for the frozen part once.

The SVM of each fold reads a feature layer of that fold's fine-tuned network
(``pooled``: the global-average-pooled backbone output that feeds the head;
``head``: the head's hidden Dense layer).  Every fold shares the frozen
prefix, so it runs once over all images (:class:`~ultrasound_transfer.networks.frozen_prefix.PrefixCache`)
and each fold runs only its trained tail up to the feature layer.  At
``ft_fraction = 0`` the pooled features are the cached tensor itself: one
pass serves every fold.  With nothing frozen (``ft_fraction = 1``) each fold
runs the whole network, as there is nothing to share.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np

from ultrasound_transfer.networks.backbones import FEATURE_LAYERS, to_network_input
from ultrasound_transfer.networks.frozen_prefix import PrefixCache, has_frozen_part, model_upto, split_at_frozen_prefix
from ultrasound_transfer.networks.training_paths import FoldBatches, as_float32
from ultrasound_transfer.settings import PrefixCacheSettings


def predict_all(model: keras.Model, inputs: list[np.ndarray], batch_size: int,
                prepare: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``model`` over every row of ``inputs``, in order, as float32."""
    rows = np.arange(len(inputs[0]))
    outputs = model.predict(FoldBatches(inputs, rows, batch_size, prepare=prepare), verbose=0)
    return np.asarray(outputs, dtype=np.float32)


@contextlib.contextmanager
def feature_pass(
    model: keras.Model,
    images: np.ndarray,
    *,
    layer: str,
    model_name: str,
    batch_size: int,
    cache: PrefixCacheSettings = PrefixCacheSettings(),
    scratch_dir: Path | str | None = None,
) -> Iterator[Callable[[], np.ndarray]]:
    """Yield a function giving the ``layer`` features (N, D) of all ``images`` under ``model``'s current weights.

    Load a fold's weights into ``model``, call the function, repeat; the
    frozen prefix ran once, when the block was entered (always: ``cache.enabled``
    concerns training only).
    """
    target = model.get_layer(FEATURE_LAYERS[layer])
    to_input = lambda batch: to_network_input(batch, model_name)  # noqa: E731
    if not has_frozen_part(model):
        whole = model_upto(model, [], target.name)
        yield lambda: predict_all(whole, [images], batch_size, to_input)
        return
    split = split_at_frozen_prefix(model)
    with PrefixCache(split, images, to_input=to_input, batch_size=batch_size, dtype=cache.dtype,
                     memory_limit_mb=cache.memory_mb, scratch_dir=scratch_dir) as prefix:
        if target.name in split.cut:
            cached = np.asarray(prefix.arrays[split.cut.index(target.name)], dtype=np.float32)
            yield lambda: cached.copy()
            return
        tail = model_upto(model, split.cut, target.name)
        yield lambda: predict_all(tail, prefix.arrays, batch_size, as_float32)
