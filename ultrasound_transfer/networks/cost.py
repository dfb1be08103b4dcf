"""What fine-tuning costs in arithmetic: multiply-adds of the frozen prefix and the trained tail.

A convolution costs ``H_out * W_out * C_out * k_h * k_w * C_in`` multiply-adds
per image, a dense layer ``inputs * outputs``; batch normalization, pooling
and activations are a few operations per value and are left out (well under
1 % for these networks).  Training an image costs about three forward passes
of what trains (the backward pass is about twice the forward), and nothing
below the first trained layer is differentiated.  So per training image a
plain ``fit`` pays ``prefix + 3 * tail`` and the cached path ``3 * tail``
after one ``prefix`` pass per image and dataset; the ideal speedup of an
epoch is ``1 + prefix / (3 * tail)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from ultrasound_transfer.networks.frozen_prefix import has_frozen_part, split_at_frozen_prefix


def layer_macs(layer: keras.layers.Layer) -> int:
    """Multiply-adds of one layer for one image (convolutions and dense layers; others 0)."""
    if isinstance(layer, keras.layers.Conv2D):
        kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
        _, height, width, _ = layer.output.shape
        return int(height * width * channels_out * kernel_h * kernel_w * channels_in)
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.kernel.shape))
    return 0


@dataclass(frozen=True)
class SplitMacs:
    """Multiply-adds per image of a network's frozen prefix and of its trained tail."""

    prefix: int
    tail: int

    @property
    def ideal_epoch_speedup(self) -> float:
        """Plain epoch over cached epoch, from arithmetic alone: ``1 + prefix / (3 * tail)``."""
        return 1 + self.prefix / (3 * self.tail)


def split_macs(model: keras.Model) -> SplitMacs:
    """Multiply-adds per image of ``model``'s frozen prefix and trained tail (all tail if nothing is frozen)."""
    total = sum(layer_macs(layer) for layer in model.layers)
    if not has_frozen_part(model):
        return SplitMacs(prefix=0, tail=total)
    tail_layers = {id(layer) for layer in split_at_frozen_prefix(model).tail.layers}
    tail = sum(layer_macs(layer) for layer in model.layers if id(layer) in tail_layers)
    return SplitMacs(prefix=total - tail, tail=tail)


@dataclass(frozen=True)
class UnitWork:
    """The multiply-adds of one dataset x network x strategy: ``finetune`` (training and features) over all folds."""

    prefix_pass: float     # the frozen prefix over every image, once per unit
    training: float        # forward + backward of what trains, every fit image and epoch
    inference: float       # validation every epoch, the test fold, and the features of every image per fold

    @property
    def total(self) -> float:
        return self.prefix_pass + self.training + self.inference


def unit_work(macs: SplitMacs, *, images: int, folds: int, epochs: int, validation_fraction: float,
              cached: bool = True, repeats: int = 1) -> UnitWork:
    """Multiply-adds of ``finetune`` (training and the features) for one unit, at the maximum number of epochs.

    ``cached``: the project's path (prefix once per stage); otherwise a plain
    study that runs the whole network every epoch and every fold.  ``repeats``
    of the cross-validation train every fold again; the cached prefix still
    runs once.
    """
    train_part = images * (folds - 1) / folds
    fit, validation, test = train_part * (1 - validation_fraction), train_part * validation_fraction, images / folds
    if cached:
        prefix_pass = images * macs.prefix       # once; the features read the same cache
        per_train, per_eval = 3 * macs.tail, macs.tail
    else:
        prefix_pass = 0.0
        per_train, per_eval = macs.prefix + 3 * macs.tail, macs.prefix + macs.tail
    splits = folds * repeats
    training = splits * epochs * fit * per_train
    inference = splits * (epochs * validation * per_eval + test * per_eval + images * per_eval)
    return UnitWork(prefix_pass, training, inference)
