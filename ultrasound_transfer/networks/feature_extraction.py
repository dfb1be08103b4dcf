"""Layer outputs of every image under each fold's network, paying for the frozen part once.

``external`` reads another dataset's images through the fold networks of
``finetune``: the SVM's feature layer and the dense head's output (``finetune``
itself takes its features from its training path,
:func:`~ultrasound_transfer.networks.training_paths.layer_outputs`).  Every
fold shares the frozen prefix, so it runs once over all images
(:class:`~ultrasound_transfer.networks.frozen_prefix.PrefixCache`) and each
fold runs only its trained tail up to the layers asked for.  At
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

from ultrasound_transfer.networks.backbones import to_network_input
from ultrasound_transfer.networks.frozen_prefix import PrefixCache, has_frozen_part, split_at_frozen_prefix
from ultrasound_transfer.networks.training_paths import FoldBatches, as_float32
from ultrasound_transfer.settings import PrefixCacheSettings


def predict_all(model: keras.Model, inputs: list[np.ndarray], batch_size: int,
                prepare: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """``model`` over every row of ``inputs``, in order: one float32 array per output of ``model``."""
    rows = np.arange(len(inputs[0]))
    outputs = model.predict(FoldBatches(inputs, rows, batch_size, prepare=prepare), verbose=0)
    return [np.asarray(o, dtype=np.float32) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


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
) -> Iterator[Callable[[], list[np.ndarray]]]:
    """Yield a function giving the outputs of ``layer_names`` for all ``images`` under ``model``'s current weights.

    Load a fold's weights into ``model``, call the function, repeat; the
    frozen prefix ran once, when the block was entered (always: ``cache.enabled``
    concerns training only).  A layer the prefix ends at is read from the cache.
    """
    to_input = lambda batch: to_network_input(batch, model_name, preprocessing=preprocessing)  # noqa: E731
    outputs_of = lambda names: [model.get_layer(n).output for n in names]  # noqa: E731
    if not has_frozen_part(model):
        whole = keras.Model(model.inputs, outputs_of(layer_names))
        yield lambda: predict_all(whole, [images], batch_size, to_input)
        return
    split = split_at_frozen_prefix(model)
    with PrefixCache(split, images, to_input=to_input, batch_size=batch_size, dtype=cache.dtype,
                     memory_limit_mb=cache.memory_mb, scratch_dir=scratch_dir) as prefix:
        computed = [n for n in layer_names if n not in split.cut]
        tail = keras.Model(outputs_of(split.cut), outputs_of(computed)) if computed else None

        def outputs() -> list[np.ndarray]:
            fresh = iter(predict_all(tail, prefix.arrays, batch_size, as_float32) if tail else [])
            return [np.array(prefix.arrays[split.cut.index(n)], dtype=np.float32) if n in split.cut else next(fresh)
                    for n in layer_names]

        yield outputs
