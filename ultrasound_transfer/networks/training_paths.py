"""What a fold trains on: seeded batches, and the choice between the full network and its cached tail.

Batches come from :class:`FoldBatches`, which draws its own seeded order
each epoch.  Both training paths (the full network on images, and the
trainable tail on cached frozen-prefix outputs, :func:`choose_training_path`)
read through it, so with the same seed they see the same images in the same
order, on any Keras backend.  The head's input standardization is fitted
through the same path (:func:`standardize_head_input`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np

from ultrasound_transfer.networks.augmentation import augment_batch
from ultrasound_transfer.networks.backbones import HEAD_NORM_LAYER, POOLED_LAYER, to_network_input
from ultrasound_transfer.networks.frozen_prefix import PrefixCache, has_frozen_part, model_upto, split_at_frozen_prefix
from ultrasound_transfer.settings import AugmentationSettings, PrefixCacheSettings

# The most that FoldBatches.as_tf_dataset holds in memory, prepared; beyond it its pipeline reads batch by batch.
MAX_TF_FEED_BYTES = 2 * 2**30


class FoldBatches(keras.utils.PyDataset):
    """Batches of the rows ``rows`` of aligned arrays, in a fresh seeded order each epoch.

    ``inputs`` holds one array per network input, all rows of the dataset
    (memory-maps welcome: only a batch is read at a time).  ``seed = None``
    keeps ``rows`` in order (validation, prediction); otherwise epoch e uses
    the permutation drawn from ``(seed, e)``.  ``augmentation`` transforms
    each batch (gray images only) before ``prepare`` turns it into network
    input.  Without ``labels`` batches carry inputs only, for ``predict``.
    """

    def __init__(
        self,
        inputs: list[np.ndarray],
        rows: np.ndarray,
        batch_size: int,
        *,
        labels: np.ndarray | None = None,
        seed: int | None = None,
        prepare: Callable[[np.ndarray], np.ndarray] = np.asarray,
        augmentation: AugmentationSettings | None = None,
        prepared_tensors: Callable[[], list] | None = None,
    ) -> None:
        super().__init__()
        if augmentation is not None and seed is None:
            raise ValueError("augmentation needs a seed")
        self.inputs, self.rows, self.batch_size = inputs, np.asarray(rows), batch_size
        self.labels, self.seed, self.prepare, self.augmentation = labels, seed, prepare, augmentation
        self.prepared_tensors = prepared_tensors
        self.epoch = 0
        self.order = self.epoch_order()

    def epoch_order(self, epoch: int | None = None) -> np.ndarray:
        """The rows in the order of epoch ``epoch`` (by default the current one); unshuffled without a seed."""
        if self.seed is None:
            return self.rows
        epoch = self.epoch if epoch is None else epoch
        return self.rows[np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))]

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        arrays = [array[rows] for array in self.inputs]
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            arrays = [augment_batch(array, self.augmentation, rng) for array in arrays]
        arrays = [self.prepare(array) for array in arrays]
        x = arrays[0] if len(arrays) == 1 else tuple(arrays)
        return (x,) if self.labels is None else (x, self.labels[rows])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self.epoch_order()

    def as_tf_dataset(self, epochs: int):
        """The batches that Keras' ``fit`` draws from this ``PyDataset`` over ``epochs`` epochs, as a ``tf.data``
        pipeline; None where it does not apply (another backend, augmentation).

        Keras feeds a ``PyDataset`` on TensorFlow through ``from_generator``,
        a Python call per batch: on ResNet101's tail at the demo's size that
        was 28 % of each epoch.  Here the inputs, prepared once (``prepare``
        works pixel by pixel, so whole arrays give what batches give), are
        gathered inside the graph in the orders :meth:`epoch_order` draws.
        Keras reads a ``PyDataset``'s first batches to learn their shapes and
        then calls :meth:`on_epoch_end`, so its first training epoch reads
        order 1, its second order 2...; the pipeline follows, and training
        sees the batches it saw before, bit for bit (tests/networks/test_fitting.py).
        ``prepared_tensors`` gives the prepared inputs as tensors made once
        for every feed of a training path (:meth:`TrainingPath.prepared_tensors`):
        made per feed, each fold's training and validation feeds held a copy
        of the whole cache, 4 GB of a 600 MB cache after a few folds.

        Memory-mapped inputs (a cache over ``finetune.cache_memory_mb``), and
        inputs over ``MAX_TF_FEED_BYTES`` prepared, stay where they are: each
        batch's rows are read and prepared by NumPy, as :meth:`__getitem__`
        does, inside the pipeline, whose prefetch reads the next batch while
        the step runs.  Through the ``PyDataset`` the reading waited for the
        step: a memory-mapped cache on TensorFlow was up to half again slower
        than the same cache in memory, and in one configuration slower than
        plain ``fit`` (``benchmarks/results/epochs_tensorflow.md``).
        """
        if keras.backend.backend() != "tensorflow" or self.augmentation is not None:
            return None
        import tensorflow as tf

        labels = None if self.labels is None else tf.constant(np.asarray(self.labels))
        first = self.epoch + (self.seed is not None)
        orders = np.stack([self.epoch_order(e) for e in range(first, first + epochs)]).astype(np.int64)
        batch_size = self.batch_size
        gather_inputs = self.graph_gather() if self.fits_in_the_graph() else self.numpy_gather()

        def gather(rows):
            x = gather_inputs(rows)
            x = x[0] if len(x) == 1 else x
            return (x,) if labels is None else (x, tf.gather(labels, rows))

        def batched(rows):
            return tf.data.Dataset.from_tensor_slices(rows).batch(batch_size)

        batches = tf.data.Dataset.from_tensor_slices(orders).flat_map(batched)
        # flat_map hides the length, which Keras needs to tell a finished epoch from data that ran out.
        batches = batches.apply(tf.data.experimental.assert_cardinality(len(orders) * len(self)))
        return batches.map(gather).prefetch(2)

    def fits_in_the_graph(self) -> bool:
        """Whether :meth:`as_tf_dataset` holds the prepared inputs as tensors: none memory-mapped, all within
        ``MAX_TF_FEED_BYTES`` prepared."""
        return not any(isinstance(array, np.memmap) for array in self.inputs) and sum(
            self.prepare(array[:1]).nbytes * len(array) for array in self.inputs) <= MAX_TF_FEED_BYTES

    def graph_gather(self) -> Callable:
        """Rows -> the prepared inputs' rows, gathered from tensors of the whole prepared inputs."""
        import tensorflow as tf

        prepared = (self.prepared_tensors() if self.prepared_tensors is not None
                    else [tf.constant(self.prepare(array)) for array in self.inputs])
        return lambda rows: tuple(tf.gather(array, rows) for array in prepared)

    def numpy_gather(self) -> Callable:
        """Rows -> the prepared inputs' rows, read from the arrays (memory-maps) by NumPy, batch by batch."""
        import tensorflow as tf

        inputs, prepare = self.inputs, self.prepare
        examples = [prepare(array[:1]) for array in inputs]

        def read(rows: np.ndarray) -> list[np.ndarray]:
            return [prepare(array[rows]) for array in inputs]

        def gather(rows):
            # Pure: the arrays do not change while the pipeline runs, so tf.data may prefetch it.
            read_rows = tf.numpy_function(read, [rows], [tf.as_dtype(example.dtype) for example in examples],
                                          stateful=False)
            for tensor, example in zip(read_rows, examples):
                tensor.set_shape((None, *example.shape[1:]))
            return tuple(read_rows)

        return gather


def as_float32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


@dataclass
class TrainingPath:
    """What the folds train (the network, or its tail) and the arrays that feed it."""

    model: keras.Model
    inputs: list[np.ndarray]
    prepare: Callable[[np.ndarray], np.ndarray]
    batch_size: int
    augmentation: AugmentationSettings | None = None
    description: dict = field(default_factory=dict)

    _tensors: list | None = field(default=None, repr=False)

    def batches(self, rows: np.ndarray, labels: np.ndarray | None = None, seed: int | None = None) -> FoldBatches:
        """Batches of ``rows``; shuffled (and augmented, if set) only when ``seed`` is given."""
        return FoldBatches(self.inputs, rows, self.batch_size, labels=labels, seed=seed, prepare=self.prepare,
                           augmentation=self.augmentation if seed is not None else None,
                           prepared_tensors=self.prepared_tensors)

    def prepared_tensors(self) -> list:
        """The inputs prepared and made TensorFlow tensors, once for all the path's ``tf.data`` feeds
        (:meth:`FoldBatches.as_tf_dataset`).

        Where preparing only makes float32 (the cached path), the arrays of
        ``inputs`` (the cache's own list) are then replaced by read-only views
        of those tensors, so that the cache is held once, not as an array and
        a tensor: a sixth of the stage's peak at 224 px.  Gray images stay as
        they are: their prepared tensors are the network's input, not them.
        """
        if self._tensors is None:
            import tensorflow as tf

            self._tensors = [tf.constant(self.prepare(array)) for array in self.inputs]
            if self.prepare is as_float32:
                self.inputs[:] = [np.asarray(tensor) for tensor in self._tensors]
        return self._tensors


@contextlib.contextmanager
def choose_training_path(
    model: keras.Model,
    images: np.ndarray,
    *,
    model_name: str,
    batch_size: int,
    preprocessing: str = "keras",
    cache: PrefixCacheSettings = PrefixCacheSettings(),
    augmentation: AugmentationSettings | None = None,
    scratch_dir: Path | str | None = None,
) -> Iterator[TrainingPath]:
    """The faster of two equivalent ways to train ``model`` on gray ``images``.

    With a frozen part, no augmentation and ``cache.enabled``, the
    frozen prefix runs once over all images and the tail trains on its cached
    outputs (:mod:`ultrasound_transfer.networks.frozen_prefix`).  Otherwise the full network trains
    on the images.  ``description`` says which path was taken and why.
    """
    to_input = lambda batch: to_network_input(batch, model_name, preprocessing=preprocessing)  # noqa: E731
    if not cache.enabled:
        reason = "finetune.frozen_prefix_cache is off"
    elif augmentation is not None:
        reason = "augmentation changes the frozen part's input every epoch"
    elif not has_frozen_part(model):
        reason = "ft_fraction = 1: nothing is frozen"
    else:
        split = split_at_frozen_prefix(model)
        with PrefixCache(split, images, to_input=to_input, batch_size=batch_size, dtype=cache.dtype,
                         memory_limit_mb=cache.memory_mb, scratch_dir=scratch_dir) as cached:
            description = {
                "path": "frozen-prefix cache", **split.describe(), "cache_dtype": cache.dtype,
                "cache_mb": round(cached.size_mb, 1), "cache_storage": cached.storage,
            }
            yield TrainingPath(split.tail, cached.arrays, as_float32, batch_size, None, description)
        return
    yield TrainingPath(model, [images], to_input, batch_size, augmentation, {"path": "full network", "reason": reason})


def layer_outputs(path: TrainingPath, network: keras.Model, names: list[str], rows: np.ndarray) -> list[np.ndarray]:
    """The outputs of ``network``'s layers ``names`` for ``rows``, computed through the path's model in one pass.

    On the cached path a cached tensor is read as it is; anything later runs
    the tail up to those layers (once for all of them).
    """
    cached = path.description.get("cached_layers", [])
    computed = [name for name in names if name not in cached]
    fresh = []
    if computed:
        upto = model_upto(network, cached, computed)
        outputs = upto.predict(path.batches(rows), verbose=0)
        fresh = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    fresh = iter([np.asarray(output, dtype=np.float32) for output in fresh])
    return [np.asarray(path.inputs[cached.index(name)][rows], dtype=np.float32) if name in cached else next(fresh)
            for name in names]


def layer_output(path: TrainingPath, network: keras.Model, name: str, rows: np.ndarray) -> np.ndarray:
    """The output of ``network``'s layer ``name`` for ``rows`` (:func:`layer_outputs` of one layer)."""
    return layer_outputs(path, network, [name], rows)[0]


def standardize_head_input(path: TrainingPath, network: keras.Model, rows: np.ndarray) -> bool:
    """Fit the head's standardization (if the network has one) to the pooled features of ``rows``.

    Each feature is centred on its mean over ``rows``; all are divided by one
    common standard deviation (the root of the mean per-feature variance), so
    the head sees unit scale without the features that barely vary (dead
    units of a random network) being blown up.  ``rows`` are the images the
    fold trains on, never its validation or test images; the values stay
    fixed while the fold trains and are kept in its fold file.  Returns
    whether there was a standardization to fit.
    """
    if HEAD_NORM_LAYER not in {layer.name for layer in network.layers}:
        return False
    pooled = layer_output(path, network, POOLED_LAYER, rows).astype(np.float64)
    spread = math.sqrt(float(pooled.var(axis=0).mean())) or 1.0
    norm = network.get_layer(HEAD_NORM_LAYER)
    norm.mean.assign(pooled.mean(axis=0).astype(np.float32))
    norm.scale.assign(np.full(pooled.shape[1], 1.0 / spread, dtype=np.float32))
    return True
