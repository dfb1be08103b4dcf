"""Fitting one fold: the optimizer, compiling, putting the model back between folds, early stopping.

Building a ResNet or Inception network and tracing its training step costs far
more than a demo-sized fold of training, so ``finetune`` builds and compiles
the model once (:func:`compile_classifier`) and, before each fold, restores
the initial weights and the optimizer's initial state with :class:`FoldReset`.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from ultrasound_transfer.choices import CLASS_WEIGHTS, JIT_COMPILE
from ultrasound_transfer.common import Progress, check_choice, log
from ultrasound_transfer.networks.backbones import HEAD_LAYERS
from ultrasound_transfer.networks.training_paths import FoldBatches

# Keyed by the names of ultrasound_transfer.choices.OPTIMIZERS (a test keeps both equal).
OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A fresh optimizer by name (``adam``, ``sgd`` with momentum 0.9, ``rmsprop``)."""
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
    model: keras.Model, *, optimizer: str, learning_rate: float, jit_compile: str | bool = "auto",
    backbone_lr_factor: float = 1.0,
) -> None:
    """Compile for integer labels; build the optimizer's slots now so they can be reset.

    ``jit_compile``: ``auto`` lets Keras decide (XLA on a GPU with TensorFlow,
    unless deterministic ops are on; always with JAX; never with PyTorch),
    ``true``/``false`` force it.  ``backbone_lr_factor``: see
    :func:`head_and_backbone_optimizer`.
    """
    check_choice("finetune.jit_compile", jit_compile, JIT_COMPILE)
    model.compile(
        optimizer=head_and_backbone_optimizer(model, optimizer, learning_rate, backbone_lr_factor),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
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


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """``None`` for ``mode='none'``; inverse-frequency weights for ``'balanced'``."""
    check_choice("finetune.class_weight", mode, CLASS_WEIGHTS)
    if mode == "none":
        return None
    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights)}


class EpochLog(keras.callbacks.Callback):
    """One progress line per epoch: losses, accuracies, seconds, and the stage's epochs done and time left.

    ``progress`` counts epochs over all folds of the stage; the epochs that
    early stopping saves are counted as skipped when a fold ends, so the time
    left is an upper bound that tightens as folds finish.
    """

    def __init__(self, stage: str, prefix: str, epochs: int, progress: Progress | None = None) -> None:
        super().__init__()
        self.stage, self.prefix, self.epochs = stage, prefix, epochs
        self.progress, self.epochs_run = progress, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_run += 1
        shown = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        overall = ""
        if self.progress is not None:
            self.progress.done()
            overall = f"; {self.progress}"
        log(self.stage, f"{self.prefix} epoch {epoch + 1}/{self.epochs} {shown} "
            f"({time.perf_counter() - self.start:.1f} s{overall})")

    def on_train_end(self, logs=None):
        if self.progress is not None:
            self.progress.skip(self.epochs - self.epochs_run)


def fit_fold(
    model: keras.Model,
    train: FoldBatches,
    validation: FoldBatches | None,
    *,
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
    # On TensorFlow the same batches through tf.data, without a Python call per batch (FoldBatches.as_tf_dataset).
    train_feed = train.as_tf_dataset(epochs)
    validation_feed = None if validation is None else validation.as_tf_dataset(1)
    history = model.fit(
        train if train_feed is None else train_feed,
        steps_per_epoch=None if train_feed is None else len(train),
        validation_data=validation if validation_feed is None else validation_feed,
        epochs=epochs, shuffle=False, class_weight=class_weight, callbacks=callbacks, verbose=0,
    )
    return history.history
