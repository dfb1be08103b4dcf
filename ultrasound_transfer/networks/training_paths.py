"""What a fold trains on: seeded batches, and the choice between the full network and its cached tail.

Batches come from :class:`FoldBatches`, which draws its own seeded order
each epoch.  Both training paths (the full network on images, and the
trainable tail on cached frozen-prefix outputs, :func:`choose_training_path`)
read through it, so with the same seed they see the same images in the same
order, on any Keras backend.  Predictions through a path come in batches
of one shape (:func:`predict_rows`); the layers read for the head's
standardization and the SVM's features go through the same path
(:class:`~ultrasound_transfer.networks.feature_extraction.LayerReader`).
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
from ultrasound_transfer.networks.backbones import to_network_input
from ultrasound_transfer.networks.frozen_prefix import PrefixCache, has_frozen_part, split_at_frozen_prefix
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


def whole_batches(rows: np.ndarray, batch_size: int) -> np.ndarray:
    """``rows`` padded to a whole number of batches of ``batch_size`` with repeats of the last row."""
    rows = np.asarray(rows)
    return np.concatenate([rows, np.repeat(rows[-1:], -len(rows) % batch_size)]) if len(rows) else rows


def predict_rows(model: keras.Model, inputs: list[np.ndarray], rows: np.ndarray, *, batch_size: int,
                 prepare: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """``model``'s outputs for ``rows`` of ``inputs`` (one float32 array per output, rows in order).

    Where ``model``'s predictions are compiled (``model.jit_compile``: on JAX;
    XLA on TensorFlow, ``torch.compile`` on PyTorch, when asked for), a step
    is compiled for every input shape, so the rows go in whole batches
    (:func:`whole_batches`) and the padding's outputs are dropped: one
    compilation per model, not one for every new size of a last batch
    (docs/speed.md, *One compilation per model a unit predicts with*, counts
    them in the demo).  Elsewhere the rows go as they are: there is nothing to
    recompile, and a row can round differently alone than in a full batch
    (oneDNN's kernels for a batch of one moved a row of ResNet50's pooled
    features by 1e-5, which moved what the folds trained on).
    """
    rows = np.asarray(rows)
    batched = whole_batches(rows, batch_size) if model.jit_compile else rows
    outputs = model.predict(FoldBatches(inputs, batched, batch_size, prepare=prepare), verbose=0)
    return [np.asarray(output[:len(rows)], dtype=np.float32)
            for output in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


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

    def predict(self, rows: np.ndarray, model: keras.Model | None = None) -> list[np.ndarray]:
        """The outputs of ``model`` (by default the path's own) for ``rows`` (:func:`predict_rows`)."""
        return predict_rows(self.model if model is None else model, self.inputs, rows, batch_size=self.batch_size,
                            prepare=self.prepare)

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
