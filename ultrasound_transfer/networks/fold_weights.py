"""A fold's fine-tuned network on disk: only what training changed, and a fingerprint of the rest.

At ``ft_fraction = 0.15`` a fold changes the last few layers and the head;
the frozen part is the same in every fold, every strategy's folds and every
run with the same starting weights.  Saving whole networks would put 59-170 MB
per fold into DVC's cache, 2.5 GB per dataset and strategy; saving the
trained layers stores only what differs (docs/experiments.md, "Fold networks are small enough to cache").

A fold file (``fold<k>.weights.npz``) holds every variable of every layer that
trained (trainable weights and, for batch normalization, the moving
statistics), keyed ``<position>:<variable>`` by the layer's position in the
network (Keras' automatic layer names, ``conv2d_82``, depend on what else the
process built before, positions do not), and a metadata record with the
SHA-256 of the frozen layers' values.  Loading rebuilds the network from the
same ``weights`` source and seed, checks that fingerprint and which layers
trained, then assigns the stored values: a fold can never be combined with a
frozen part it was not trained on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from ultrasound_transfer.common import PipelineError, write_atomic

FORMAT_VERSION = 2
META_KEY = "__meta__"


def trained_layers(model: keras.Model) -> list[tuple[int, keras.layers.Layer]]:
    """(position, layer) of the layers whose values training can change: those with trainable weights."""
    return [(i, layer) for i, layer in enumerate(model.layers) if layer.weights and layer.trainable]


def frozen_layers(model: keras.Model) -> list[tuple[int, keras.layers.Layer]]:
    """(position, layer) of the layers with weights that are frozen: identical before and after every fold."""
    return [(i, layer) for i, layer in enumerate(model.layers) if layer.weights and not layer.trainable]


def layer_signature(position: int, layer: keras.layers.Layer) -> str:
    """What identifies a layer across processes: position, kind and variable shapes (not the name)."""
    shapes = ",".join("x".join(map(str, v.shape)) for v in layer.weights)
    return f"{position}:{type(layer).__name__}:{shapes}"


def frozen_fingerprint(model: keras.Model) -> str:
    """SHA-256 over the positions, kinds, shapes and float32 values of the frozen layers' variables."""
    digest = hashlib.sha256()
    for position, layer in frozen_layers(model):
        digest.update(layer_signature(position, layer).encode())
        for variable in layer.weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable), dtype=np.float32).tobytes())
    return digest.hexdigest()


def save_fold_weights(model: keras.Model, path: Path | str, frozen_sha256: str) -> None:
    """Write the trained layers of ``model`` and the fingerprint of its frozen part to ``path`` (.npz)."""
    layers = trained_layers(model)
    arrays = {
        f"{position}:{index}": keras.ops.convert_to_numpy(variable)
        for position, layer in layers for index, variable in enumerate(layer.weights)
    }
    meta = {
        "format": FORMAT_VERSION,
        "frozen_sha256": frozen_sha256,
        "trained_layers": [layer_signature(position, layer) for position, layer in layers],
        "trained_layer_names": [layer.name for _, layer in layers],     # for a reader; names are not compared
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    write_atomic(path, lambda tmp: np.savez(tmp, **{META_KEY: np.array(json.dumps(meta))}, **arrays))


def read_meta(path: Path | str) -> dict:
    """The metadata record of a fold file."""
    with np.load(path) as stored:
        return json.loads(str(stored[META_KEY][()]))


def load_fold_weights(model: keras.Model, path: Path | str, frozen_sha256: str, rerun: str) -> None:
    """Put the trained layers stored in ``path`` into ``model``, after checking they belong to it.

    ``frozen_sha256`` is :func:`frozen_fingerprint` of ``model``; ``rerun`` is the
    command that remakes the file, named in the error when the check fails.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} is missing; run '{rerun}'.")
    with np.load(path) as stored:
        meta = json.loads(str(stored[META_KEY][()]))
        layers = trained_layers(model)
        if meta.get("format") != FORMAT_VERSION or meta["trained_layers"] != [layer_signature(*pl) for pl in layers]:
            raise PipelineError(
                f"{path} holds the trained layers of another network or strategy ({len(meta['trained_layers'])} "
                f"layers, this network trains {len(layers)} from position {layers[0][0]}); ft_fraction or the "
                f"network changed: run '{rerun}'."
            )
        if meta["frozen_sha256"] != frozen_sha256:
            raise PipelineError(
                f"{path} was trained on a different frozen part (fingerprint {meta['frozen_sha256'][:12]} "
                f"with Keras {meta['keras']} on {meta['backend']}, here {frozen_sha256[:12]} with Keras "
                f"{keras.__version__} on {keras.backend.backend()}): the weights source, seed, Keras version "
                f"or backend differs. Run '{rerun}' to retrain it here."
            )
        for position, layer in layers:
            for index, variable in enumerate(layer.weights):
                variable.assign(stored[f"{position}:{index}"])
