"""Frozen-prefix caching: run the frozen part of a network once, train only the rest.

Frozen layers never change during fine-tuning, so the frozen part of the
network computes the same output for an image in every epoch and in every
fold.  A plain ``fit`` recomputes it anyway.  Here the network is split into

* the **prefix**: every layer whose output depends on frozen layers only; it
  runs once per image, and its outputs are cached;
* the **tail**: every trained layer and everything downstream of one; it
  trains on the cached tensors, sharing its layers (and so its weights) with
  the full network.

The split follows the graph, not the layer list: where the first trained
layer sits inside a residual or Inception block, the tail needs several
tensors (for ResNet101 at ``ft_fraction = 0.15``, the block's input for the
shortcut and the output of its frozen first convolution), and it gets them as
several inputs.  Nothing is moved to a block boundary, so the cached part is
exactly the frozen part.  :attr:`FrozenSplit.cut` records the layers whose
outputs are cached.

Training the tail computes what training the full network computes: frozen
batch-normalization layers run in inference mode in both (Keras does this for
any layer with ``trainable = False``), and layers that act differently in
training (dropout, noise) are always kept in the tail.  Results agree up to
float rounding, which training can amplify (docs/speed.md);
``tests/networks/test_frozen_prefix.py`` checks both paths against each other.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from ultrasound_transfer.common import PipelineError, free_space_problem

# Weightless layers whose output differs between training and inference: they
# must run inside the training step, so they never go into the prefix.
TRAINING_DEPENDENT = (
    keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
)
@dataclass
class FrozenSplit:
    """A network split into its frozen prefix and its trainable tail."""

    prefix: keras.Model     # network input -> cached tensors
    tail: keras.Model       # cached tensors -> network output, layers shared with the network
    cut: list[str]          # layers whose outputs are cached, in the tail's input order

    def describe(self) -> dict:
        """Where the cut landed, for ``freezing.json`` and the log."""
        return {
            "cached_layers": self.cut,
            "cached_values_per_image": int(sum(np.prod(t.shape[1:]) for t in self.tail.inputs)),
            "prefix_layers": len(self.prefix.layers),
            "tail_layers": len(self.tail.layers),
        }


def layer_inputs(layer: keras.layers.Layer) -> list:
    """The tensors ``layer`` was called on (none for an input layer)."""
    if isinstance(layer, keras.layers.InputLayer):
        return []
    return keras.tree.flatten(layer.input)


def has_frozen_part(model: keras.Model) -> bool:
    """True when at least one weight-carrying layer of ``model`` is frozen."""
    return any(layer.weights and not layer.trainable for layer in model.layers)


def split_at_frozen_prefix(model: keras.Model) -> FrozenSplit:
    """Split ``model`` (a functional network) where its frozen part ends.

    A layer belongs to the tail if it trains, acts differently in training, or
    takes any input from the tail; every other layer is in the prefix.  The
    cut is the set of prefix outputs that tail layers read.
    """
    producer = {id(layer.output): layer for layer in model.layers}
    in_tail: set[int] = set()
    cut: list[keras.layers.Layer] = []
    for layer in model.layers:   # topological order: producers before consumers
        inputs = [producer[id(tensor)] for tensor in layer_inputs(layer)]
        trains = bool(layer.weights) and layer.trainable
        if trains or isinstance(layer, TRAINING_DEPENDENT) or any(id(p) in in_tail for p in inputs):
            in_tail.add(id(layer))
            cut.extend(p for p in inputs if id(p) not in in_tail and p not in cut)
    if not cut:
        raise ValueError(f"{model.name} has no trainable layer: nothing to split off.")
    cached = [layer.output for layer in cut]
    return FrozenSplit(
        prefix=keras.Model(model.inputs, cached, name=f"{model.name}_frozen_prefix"),
        tail=keras.Model(cached, model.outputs, name=f"{model.name}_trainable_tail"),
        cut=[layer.name for layer in cut],
    )


def model_upto(network: keras.Model, cut: list[str], names: list[str]) -> keras.Model:
    """``network`` from the cached tensors ``cut`` (its input when nothing is cut) to the layers ``names``.

    The inputs are the cut layers' outputs in ``network``'s own graph: a model
    built on inner tensors gets input layers of its own (the tail's), from
    which the network's later layers are not reachable.
    """
    inputs = [network.get_layer(n).output for n in cut] if cut else network.inputs
    return keras.Model(inputs, [network.get_layer(n).output for n in names])


def cache_size_mb(split: FrozenSplit, n_images: int, dtype: str) -> float:
    """Megabytes the cached tensors of ``n_images`` take in ``dtype``."""
    values = split.describe()["cached_values_per_image"]
    return n_images * values * np.dtype(dtype).itemsize / 2**20


class PrefixCache:
    """The prefix's outputs for every image, in memory or memory-mapped on disk.

    ``arrays`` holds one array per cached tensor, rows in the order of the
    images.  Caches larger than ``memory_limit_mb`` are written to ``.npy``
    memory-maps in a temporary folder under ``scratch_dir``; the operating
    system then pages them in batch by batch.  Use as a context manager, so the
    temporary folder goes away when training ends or fails.
    """

    def __init__(
        self,
        split: FrozenSplit,
        images: np.ndarray,
        *,
        to_input: Callable[[np.ndarray], np.ndarray],
        batch_size: int,
        dtype: str = "float32",
        memory_limit_mb: float = 2048,
        scratch_dir: Path | str | None = None,
    ) -> None:
        self.size_mb = cache_size_mb(split, len(images), dtype)
        self.on_disk = self.size_mb > memory_limit_mb
        if self.on_disk:
            # A memory map on a disk that fills up kills the process (SIGBUS), so the space is checked first.
            folder = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
            folder.mkdir(parents=True, exist_ok=True)
            problem = free_space_problem(folder, self.size_mb * 2**20)
            if problem:
                raise PipelineError(f"the frozen-prefix cache does not fit: {problem}; free space there, or keep it "
                                    f"in memory (raise finetune.cache_memory_mb above {self.size_mb:.0f}), or halve "
                                    "it with finetune.cache_dtype: float16.")
        self._scratch = (
            tempfile.TemporaryDirectory(prefix=".prefix-cache-", dir=scratch_dir) if self.on_disk else None
        )
        shapes = [(len(images), *t.shape[1:]) for t in split.tail.inputs]
        try:
            self.arrays = [self._allocate(i, shape, dtype) for i, shape in enumerate(shapes)]
            for start in range(0, len(images), batch_size):
                outputs = split.prefix.predict_on_batch(to_input(images[start:start + batch_size]))
                for array, output in zip(self.arrays, keras.tree.flatten(outputs)):
                    array[start:start + batch_size] = keras.ops.convert_to_numpy(output)
        except BaseException:
            self.close()
            raise

    def _allocate(self, index: int, shape: tuple, dtype: str) -> np.ndarray:
        if self._scratch is None:
            return np.empty(shape, dtype)
        path = Path(self._scratch.name) / f"tensor{index}.npy"
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    @property
    def storage(self) -> str:
        return "memory-mapped file" if self.on_disk else "memory"

    def close(self) -> None:
        self.arrays = []
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> "PrefixCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
