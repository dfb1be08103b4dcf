"""Training one fold of a classifier, and putting the model back between folds.

Building a ResNet or Inception network and tracing its training step costs far
more than a demo-sized fold of training, so ``finetune`` builds and compiles
the model once and, before each fold, restores the initial weights and the
optimizer's initial state with :class:`FoldReset`.

Batches come from :class:`FoldBatches`, which draws its own seeded order
each epoch.  Both training paths (the full network on images, and the
trainable tail on cached frozen-prefix outputs) read through it, so with the
same seed they see the same images in the same order, on any Keras backend.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils.class_weight import compute_class_weight

from ultrasound_transfer.common import PipelineError, check_choice, log
from ultrasound_transfer.data.grouping import fewest_groups_per_class
from ultrasound_transfer.networks.augmentation import Augmentation, augment_batch
from ultrasound_transfer.networks.backbones import HEAD_LAYERS, HEAD_NORM_LAYER, POOLED_LAYER, to_network_input
from ultrasound_transfer.networks.frozen_prefix import PrefixCache, has_frozen_part, model_upto, split_at_frozen_prefix

OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
JIT_CHOICES = {"auto": "auto", True: True, False: False}
DATA_PARALLEL_BACKENDS = ("tensorflow", "jax")


def seed_everything(seed: int, deterministic_ops: bool = True) -> None:
    """Seed Python, NumPy and the Keras backend; ask for deterministic kernels.

    On the CPU this makes runs with the same params repeat bit for bit, on
    every backend.  ``deterministic_ops`` asks the backend for deterministic
    kernels where it has a switch: TensorFlow's op determinism, PyTorch's
    deterministic algorithms (and cuDNN's deterministic mode), and XLA's
    deterministic GPU ops for JAX (read when JAX first starts, so set it
    before any computation; JAX on the CPU is deterministic anyway).
    """
    keras.utils.set_random_seed(seed)
    if not deterministic_ops:
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        # Some CUDA kernels are deterministic only with this workspace setting.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op without a deterministic kernel (rare, GPU only) warns
        # with its name instead of stopping a long run midway.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif backend == "jax" and "--xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()


def set_precision(policy: str) -> None:
    """Use ``policy`` for every layer built from now on (``mixed_*`` computes in 16 bits).

    Mixed precision pays off on GPUs with tensor cores; on a CPU it is slower.
    The softmax output stays float32 (see :func:`ultrasound_transfer.networks.backbones.attach_head`),
    and Keras scales the loss under ``mixed_float16``.
    """
    check_choice("finetune.precision", policy, PRECISIONS)
    keras.config.set_dtype_policy(policy)


def gpu_devices() -> list[str]:
    """The GPUs the Keras backend sees."""
    if keras.backend.backend() == "torch":
        # keras.distribution has no PyTorch implementation; ask PyTorch itself.
        import torch

        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    try:
        return keras.distribution.list_devices("gpu")
    except RuntimeError:      # JAX raises where it has no GPU
        return []


def check_data_parallel_supported(enabled: bool) -> None:
    """Refuse ``finetune.data_parallel = true`` on a backend without a data-parallel API, before any work."""
    backend = keras.backend.backend()
    if enabled and backend not in DATA_PARALLEL_BACKENDS:
        raise PipelineError(
            f"params.yaml: finetune.data_parallel = true is not supported on the {backend} backend of Keras "
            "(keras.distribution has no PyTorch implementation). Use KERAS_BACKEND=tensorflow or jax for "
            "several GPUs, or set finetune.data_parallel: false and run one unit per GPU "
            "(python -m stages.sweep gives each worker its own GPU)."
        )


@contextlib.contextmanager
def data_parallel_scope(enabled: bool, stage: str = "finetune") -> Iterator[None]:
    """Build, compile and train inside this block to split each batch over all GPUs.

    Uses the backend's own distribution API: ``tf.distribute.MirroredStrategy``
    on TensorFlow, ``keras.distribution.DataParallel`` on JAX.  With fewer
    than two GPUs there is nothing to split and training runs on one device.
    The batch size stays the global one, so results do not depend on the GPU
    count beyond float rounding.
    """
    if not enabled:
        yield
        return
    check_data_parallel_supported(enabled)
    backend = keras.backend.backend()
    gpus = gpu_devices()
    if len(gpus) < 2:
        log(stage, f"data_parallel: {len(gpus)} GPU(s) found, nothing to split; training on one device")
        yield
    elif backend == "tensorflow":
        import tensorflow as tf

        log(stage, f"data_parallel: MirroredStrategy over {len(gpus)} GPUs")
        with tf.distribute.MirroredStrategy().scope():
            yield
    else:
        log(stage, f"data_parallel: keras.distribution.DataParallel over {len(gpus)} GPUs")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=gpus))
        try:
            yield
        finally:
            keras.distribution.set_distribution(None)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A fresh optimizer by name (``adam``, ``sgd`` with momentum 0.9, ``rmsprop``)."""
    check_choice("finetune.optimizer", name, OPTIMIZERS)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    return OPTIMIZERS[name](learning_rate=learning_rate)


def head_and_backbone_optimizer(
    model: keras.Model, name: str, learning_rate: float, backbone_lr_factor: float = 1.0
) -> keras.optimizers.Optimizer:
    """The head learns at ``learning_rate``, the trained backbone layers at ``learning_rate * backbone_lr_factor``.

    Smaller steps for the backbone than for a new head ("discriminative"
    learning rates, as in ULMFiT, or Keras' fine-tuning guide's low rate for
    unfrozen layers) keep the trained layers from moving the features under a
    head that is still learning to read them.  A factor of 1 gives one plain
    optimizer, the same as before the factor existed.  The head is the layers
    :data:`HEAD_LAYERS` names; the split is by variable, through
    ``keras.optimizers.MultiOptimizer``, so it works on every backend.
    """
    head_optimizer = make_optimizer(name, learning_rate)
    if backbone_lr_factor == 1.0:
        return head_optimizer
    backbone_optimizer = make_optimizer(name, learning_rate * backbone_lr_factor)
    head = {id(variable) for layer in model.layers if layer.name in HEAD_LAYERS for variable in layer.weights}
    return keras.optimizers.MultiOptimizer(
        lambda variable: head_optimizer if id(variable) in head else backbone_optimizer)


def compile_classifier(
    model: keras.Model, optimizer: str, learning_rate: float, jit_compile: str | bool = "auto",
    backbone_lr_factor: float = 1.0,
) -> None:
    """Compile for integer labels; build the optimizer's slots now so they can be reset.

    ``jit_compile``: ``auto`` lets Keras decide (XLA on a GPU with TensorFlow,
    unless deterministic ops are on; always with JAX; never with PyTorch),
    ``true``/``false`` force it.  ``backbone_lr_factor``: see
    :func:`head_and_backbone_optimizer`.
    """
    check_choice("finetune.jit_compile", jit_compile, JIT_CHOICES)
    model.compile(
        optimizer=head_and_backbone_optimizer(model, optimizer, learning_rate, backbone_lr_factor),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=JIT_CHOICES[jit_compile],
    )
    model.optimizer.build(model.trainable_variables)


class FoldReset:
    """Snapshot of a compiled model's variables and optimizer state, restorable at will.

    All model variables are restored, the non-trainable ones too (batch-norm
    statistics, dropout seed state).  The optimizer's variables, iteration count
    and learning rate included, are restored to their values after
    :func:`compile_classifier`, so every fold starts from the same point as a
    freshly built model would.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.model_values = [v.numpy().copy() for v in model.variables]
        self.optimizer_values = [v.numpy().copy() for v in model.optimizer.variables]

    def restore(self) -> None:
        for variable, value in zip(self.model.variables, self.model_values):
            variable.assign(value)
        for variable, value in zip(self.model.optimizer.variables, self.optimizer_values):
            variable.assign(value)


def inner_validation_split(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..n-1`` of a training part into fit and validation parts.

    The split is stratified and grouped, like the outer folds, and is taken
    from the training part only, so early stopping never sees the test fold.
    ``fraction = 0`` returns no validation part.
    """
    positions = np.arange(len(labels))
    if fraction <= 0:
        return positions, positions[:0]
    n_splits = max(2, int(round(1 / fraction)))
    label, n_groups = fewest_groups_per_class(labels, groups)
    if n_groups < n_splits:
        raise PipelineError(
            f"finetune.validation_fraction = {fraction} needs at least {n_splits} groups per class "
            f"in each training part, but class {label} has {n_groups}; raise validation_fraction, "
            "set it to 0 (no early stopping), or lower cv.n_splits."
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fit, validation = next(splitter.split(positions, labels, groups))
    return fit, validation


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """``None`` for ``mode='none'``; inverse-frequency weights for ``'balanced'``."""
    check_choice("finetune.class_weight", mode, ("none", "balanced"))
    if mode == "none":
        return None
    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights)}


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
        labels: np.ndarray | None = None,
        seed: int | None = None,
        prepare: Callable[[np.ndarray], np.ndarray] = np.asarray,
        augmentation: Augmentation | None = None,
    ) -> None:
        super().__init__()
        if augmentation is not None and seed is None:
            raise ValueError("augmentation needs a seed")
        self.inputs, self.rows, self.batch_size = inputs, np.asarray(rows), batch_size
        self.labels, self.seed, self.prepare, self.augmentation = labels, seed, prepare, augmentation
        self.epoch = 0
        self.order = self.epoch_order()

    def epoch_order(self) -> np.ndarray:
        if self.seed is None:
            return self.rows
        return self.rows[np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows))]

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


def as_float32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


@dataclass
class TrainingPath:
    """What the folds train (the network, or its tail) and the arrays that feed it."""

    model: keras.Model
    inputs: list[np.ndarray]
    prepare: Callable[[np.ndarray], np.ndarray]
    batch_size: int
    augmentation: Augmentation | None = None
    description: dict = field(default_factory=dict)

    def batches(self, rows: np.ndarray, labels: np.ndarray | None = None, seed: int | None = None) -> FoldBatches:
        """Batches of ``rows``; shuffled (and augmented, if set) only when ``seed`` is given."""
        return FoldBatches(self.inputs, rows, self.batch_size, labels, seed, self.prepare,
                           self.augmentation if seed is not None else None)


@contextlib.contextmanager
def choose_training_path(
    model: keras.Model,
    images: np.ndarray,
    model_name: str,
    batch_size: int,
    frozen_prefix_cache: bool = True,
    augmentation: Augmentation | None = None,
    cache_dtype: str = "float32",
    cache_memory_mb: float = 2048,
    scratch_dir: Path | str | None = None,
) -> Iterator[TrainingPath]:
    """The faster of two equivalent ways to train ``model`` on gray ``images``.

    With a frozen part, no augmentation and ``frozen_prefix_cache`` on, the
    frozen prefix runs once over all images and the tail trains on its cached
    outputs (:mod:`ultrasound_transfer.networks.frozen_prefix`).  Otherwise the full network trains
    on the images.  ``description`` says which path was taken and why.
    """
    to_input = lambda batch: to_network_input(batch, model_name)  # noqa: E731
    if not frozen_prefix_cache:
        reason = "finetune.frozen_prefix_cache is off"
    elif augmentation is not None:
        reason = "augmentation changes the frozen part's input every epoch"
    elif not has_frozen_part(model):
        reason = "ft_fraction = 1: nothing is frozen"
    else:
        split = split_at_frozen_prefix(model)
        with PrefixCache(split, images, to_input, batch_size, cache_dtype, cache_memory_mb, scratch_dir) as cache:
            description = {
                "path": "frozen-prefix cache", **split.describe(), "cache_dtype": cache_dtype,
                "cache_mb": round(cache.size_mb, 1), "cache_storage": cache.storage,
            }
            yield TrainingPath(split.tail, cache.arrays, as_float32, batch_size, None, description)
        return
    yield TrainingPath(model, [images], to_input, batch_size, augmentation, {"path": "full network", "reason": reason})


def layer_output(path: TrainingPath, network: keras.Model, name: str, rows: np.ndarray) -> np.ndarray:
    """The output of ``network``'s layer ``name`` for ``rows``, computed through the path's model.

    On the cached path a cached tensor is read as it is; anything later runs
    the tail up to that layer.
    """
    cached = path.description.get("cached_layers", [])
    if name in cached:
        return np.asarray(path.inputs[cached.index(name)][rows], dtype=np.float32)
    upto = model_upto(network, cached, name)
    return np.asarray(upto.predict(path.batches(rows), verbose=0), dtype=np.float32)


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


class EpochLog(keras.callbacks.Callback):
    """One progress line per epoch: losses, accuracies and seconds."""

    def __init__(self, stage: str, prefix: str, epochs: int) -> None:
        super().__init__()
        self.stage, self.prefix, self.epochs = stage, prefix, epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        shown = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        log(self.stage, f"{self.prefix} epoch {epoch + 1}/{self.epochs} {shown} "
            f"({time.perf_counter() - self.start:.1f} s)")


def fit_fold(
    model: keras.Model,
    train: FoldBatches,
    validation: FoldBatches | None,
    epochs: int,
    patience: int,
    class_weight: dict[int, float] | None,
    progress: keras.callbacks.Callback,
) -> dict[str, list[float]]:
    """Train on ``train``; with a validation part, stop early and keep the best epoch.

    Returns Keras' per-epoch history (loss, accuracy, and val_* when validating).
    """
    callbacks = [progress]
    if validation is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        )
    history = model.fit(
        train, validation_data=validation, epochs=epochs, shuffle=False,
        class_weight=class_weight, callbacks=callbacks, verbose=0,
    )
    return history.history
