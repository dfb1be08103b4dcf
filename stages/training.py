"""Training one fold of a classifier, and putting the model back between folds.

Building a ResNet or Inception network and tracing its training step costs far
more than a demo-sized fold of training, so ``finetune`` builds and compiles
the model once and, before each fold, restores the initial weights and the
optimizer's initial state with :class:`FoldReset`.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils.class_weight import compute_class_weight

from stages.common import PipelineError, check_choice, log
from stages.grouping import fewest_groups_per_class

OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


def seed_everything(seed: int, deterministic_ops: bool = True) -> None:
    """Seed Python, NumPy and the Keras backend; ask for deterministic kernels.

    On the CPU this makes runs with the same params repeat bit for bit.  Only
    TensorFlow has a switch for deterministic kernels; other backends are
    seeded only.
    """
    keras.utils.set_random_seed(seed)
    if deterministic_ops and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A fresh optimizer by name (``adam``, ``sgd`` with momentum 0.9, ``rmsprop``)."""
    check_choice("finetune.optimizer", name, OPTIMIZERS)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    return OPTIMIZERS[name](learning_rate=learning_rate)


def compile_classifier(model: keras.Model, optimizer: str, learning_rate: float) -> None:
    """Compile for integer labels; build the optimizer's slots now so they can be reset."""
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
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
    x: np.ndarray,
    y: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
    epochs: int,
    batch_size: int,
    patience: int,
    class_weight: dict[int, float] | None,
    progress: keras.callbacks.Callback,
) -> dict[str, list[float]]:
    """Train on ``(x, y)``; with a validation part, stop early and keep the best epoch.

    Returns Keras' per-epoch history (loss, accuracy, and val_* when validating).
    """
    callbacks = [progress]
    if validation is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        )
    history = model.fit(
        x, y, validation_data=validation, epochs=epochs, batch_size=batch_size, shuffle=True,
        class_weight=class_weight, callbacks=callbacks, verbose=0,
    )
    return history.history
