"""The five ImageNet backbones, the classification head and layer freezing.

Everything here uses Keras 3 APIs only, so it runs on any Keras backend
(TensorFlow by default; JAX or PyTorch through ``KERAS_BACKEND``).

How ``ft_fraction`` is counted
------------------------------
Only *weight-carrying* layers of the backbone count (convolutions, batch
normalization, dense); pooling, activation, padding and merge layers carry no
weights and are not counted.  Layers are ordered as Keras lists them, which is
a topological order from input to output.  The last
``round(ft_fraction * total)`` weight-carrying layers, counted from the output
end (halves round up), are trained together with the head; every layer before
the first of them is frozen.  ``ft_fraction = 0`` trains the head alone,
``ft_fraction = 1`` trains everything.  Frozen batch-normalization layers run
in inference mode (Keras 3 does this for any BatchNormalization layer whose
``trainable`` is False), so their moving statistics stay as loaded.

Trained batch-normalization layers
----------------------------------
``finetune.batch_norm`` decides how the *trained* ones normalize while they
train: ``training`` normalizes each batch by its own statistics and updates
the moving averages, which inference then uses; ``inference`` always uses the
moving statistics, as loaded, while scale and offset still train (Keras'
fine-tuning guide advises this: small batches of a new domain otherwise pull
the moving statistics away from what the frozen layers after them expect, and
inference then differs from training).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from ultrasound_transfer.choices import BATCH_NORM_MODES, HEAD_NORMS, INPUT_PREPROCESSINGS, MODEL_MIN_SIZES
from ultrasound_transfer.common import PipelineError, check_choice
from ultrasound_transfer.networks.initialization import draw_initial_weights
from ultrasound_transfer.settings import HeadSettings


@dataclass(frozen=True)
class Backbone:
    """How to build one ``keras.applications`` network and feed it."""

    build: Callable[..., keras.Model]
    preprocess: Callable[[np.ndarray], np.ndarray]


# Keyed by the names of ultrasound_transfer.choices.MODELS (a test keeps both equal).
BACKBONES: dict[str, Backbone] = {
    "VGG16": Backbone(keras.applications.VGG16, keras.applications.vgg16.preprocess_input),
    "VGG19": Backbone(keras.applications.VGG19, keras.applications.vgg19.preprocess_input),
    "ResNet50": Backbone(keras.applications.ResNet50, keras.applications.resnet.preprocess_input),
    "ResNet101": Backbone(keras.applications.ResNet101, keras.applications.resnet.preprocess_input),
    "InceptionV3": Backbone(keras.applications.InceptionV3, keras.applications.inception_v3.preprocess_input),
}

POOLED_LAYER = "pooled"
HIDDEN_LAYER = "head_dense"
FEATURE_LAYERS = {"pooled": POOLED_LAYER, "head": HIDDEN_LAYER}


@dataclass(frozen=True)
class FreezeReport:
    """What :func:`freeze_all_but_last` did to a backbone."""

    total_layers: int          # weight-carrying layers in the backbone
    trained_layers: int        # of which trained
    first_trained_layer: str   # name, or "" when only the head trains
    trainable_params: int      # backbone parameters that train
    backbone_params: int = 0   # backbone parameters in all (batch-norm statistics included)

    @property
    def trained_share(self) -> float:
        """Share of the backbone's parameters that train: the same ft_fraction trains different shares."""
        return self.trainable_params / self.backbone_params if self.backbone_params else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "trained_share": round(self.trained_share, 4)}


class BatchNormalizationInInferenceMode(keras.layers.BatchNormalization):
    """Batch normalization that always uses its moving statistics; its scale and offset still train."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def set_batch_norm_mode(model: keras.Model, mode: str) -> int:
    """Make every trained batch-normalization layer of ``model`` normalize as ``mode`` says.

    The layers keep their weights and place in the graph; only how they
    normalize changes (their class is switched to the inference-mode subclass
    and back).  Returns the number of layers concerned.
    """
    check_choice("finetune.batch_norm", mode, BATCH_NORM_MODES)
    trained = [layer for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    for layer in trained:
        layer.__class__ = BatchNormalizationInInferenceMode if mode == "inference" else keras.layers.BatchNormalization
    return len(trained)


def check_model_name(name: str) -> Backbone:
    """The :class:`Backbone` called ``name``, or a clear error."""
    check_choice("models", name, BACKBONES)
    return BACKBONES[name]


def check_image_size(name: str, image_size: int) -> None:
    """Fail if ``image_size`` is below what the network's strides allow."""
    check_model_name(name)
    minimum = MODEL_MIN_SIZES[name]
    if image_size < minimum:
        raise PipelineError(
            f"image_size = {image_size} is too small for {name}, which needs at least {minimum} px; "
            f"set image_size to {minimum} or more (dvc exp run -S image_size={minimum}) or drop {name} from models."
        )


def resolve_weights(weights: str | None) -> str | None:
    """Translate the ``weights`` param into what ``keras.applications`` expects.

    ``none`` -> random initialization, ``imagenet`` -> the ImageNet weights Keras
    downloads and caches in ``~/.keras/models``, anything else -> a path to a
    weights file of the backbone without its top (``include_top=False``).
    """
    if weights is None or str(weights).lower() == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(str(weights))
    if not path.is_file():
        raise PipelineError(
            f"weights = {weights!r}: no such file. Use 'imagenet', 'none', or the path of a "
            "backbone weights file (.h5 / .weights.h5, saved without the top)."
        )
    return str(path)


def build_backbone(name: str, image_size: int, weights: str | None) -> keras.Model:
    """The backbone without its ImageNet top, with the requested weights.

    Never falls back to random weights: if ImageNet weights cannot be had, it
    fails and says how to provide them.
    """
    backbone = check_model_name(name)
    check_image_size(name, image_size)
    resolved = resolve_weights(weights)
    try:
        return backbone.build(include_top=False, weights=resolved, input_shape=(image_size, image_size, 3))
    except Exception as error:  # noqa: BLE001 - re-raised with the fix attached
        if resolved is None:
            raise
        where = "downloaded" if resolved == "imagenet" else f"loaded from {resolved}"
        raise PipelineError(
            f"{name}: weights could not be {where} ({type(error).__name__}: {error}). "
            "Offline, copy Keras' '*_notop.h5' file for this network into ~/.keras/models/, or set "
            "weights to the path of a weights file; use weights=none only if random "
            "initialization is what you mean."
        ) from error


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers of ``model`` that carry weights, input to output."""
    return [layer for layer in model.layers if layer.weights]


def layers_to_train(total: int, fraction: float) -> int:
    """``round(fraction * total)`` with halves rounded up (not to even)."""
    return min(total, int(math.floor(fraction * total + 0.5)))


def freeze_all_but_last(backbone: keras.Model, fraction: float) -> FreezeReport:
    """Freeze the backbone except its last ``fraction`` of weight-carrying layers."""
    layers = weighted_layers(backbone)
    n_train = layers_to_train(len(layers), fraction)
    first = len(layers) - n_train
    trained = {id(layer) for layer in layers[first:]}
    for layer in backbone.layers:
        layer.trainable = id(layer) in trained
    trainable_params = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
    return FreezeReport(
        total_layers=len(layers),
        trained_layers=n_train,
        first_trained_layer=layers[first].name if n_train else "",
        trainable_params=trainable_params,
        backbone_params=sum(int(np.prod(v.shape)) for v in backbone.weights),
    )


HEAD_NORM_LAYER = "head_norm"
DROPOUT_LAYER = "head_dropout"
OUTPUT_LAYER = "predictions"
# The layers attach_head adds: they learn at the full learning rate (finetune.backbone_lr_factor).
HEAD_LAYERS = (HEAD_NORM_LAYER, HIDDEN_LAYER, DROPOUT_LAYER, OUTPUT_LAYER)


class Standardization(keras.layers.Layer):
    """``(x - mean) * scale`` with a per-feature ``mean`` and ``scale`` set from training images, not learnt.

    Both are variables read at every call, so a fold's values, set before it
    trains (``standardize_head_input``) or loaded from its file, are the ones used.
    """

    def build(self, input_shape):
        self.mean = self.add_weight(shape=(input_shape[-1],), initializer="zeros", trainable=False, name="mean")
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", trainable=False, name="scale")

    def call(self, inputs):
        return (inputs - keras.ops.cast(self.mean, inputs.dtype)) * keras.ops.cast(self.scale, inputs.dtype)


def attach_head(backbone: keras.Model, n_classes: int, head: HeadSettings) -> keras.Model:
    """Backbone -> global average pooling -> [standardization] -> Dense(relu) -> Dropout -> Dense(softmax).

    ``head.norm = "standardize"`` puts a :class:`Standardization` between the
    pooled vector and the head, fitted to the training images of the fold
    (:func:`ultrasound_transfer.networks.feature_extraction.standardize_head_input`): the
    pooled output of a deep network can be far off unit scale and nearly
    constant across images (a randomly initialised VGG's), which a dense head
    trained for a few hundred steps cannot undo.  It uses no batch
    statistics, so training and inference compute the same.
    """
    check_choice("finetune.head_norm", head.norm, HEAD_NORMS)
    x = keras.layers.GlobalAveragePooling2D(name=POOLED_LAYER)(backbone.output)
    if head.norm == "standardize":
        x = Standardization(name=HEAD_NORM_LAYER)(x)
    x = keras.layers.Dense(head.units, activation="relu", name=HIDDEN_LAYER)(x)
    # An explicit seed (from Python's generator, which seed_everything seeds) makes
    # every backend draw the masks from the layer's own state variable, which
    # FoldReset restores; with seed=None PyTorch would use its global generator.
    x = keras.layers.Dropout(head.dropout, seed=random.randint(1, int(1e9)), name=DROPOUT_LAYER)(x)
    # float32 even under mixed precision: a float16 softmax loses small probabilities.
    outputs = keras.layers.Dense(n_classes, activation="softmax", name=OUTPUT_LAYER, dtype="float32")(x)
    return keras.Model(backbone.input, outputs, name=backbone.name)


def build_classifier(
    name: str, *, image_size: int, n_classes: int, weights: str | None, ft_fraction: float, head: HeadSettings,
    batch_norm: str = "training",
) -> tuple[keras.Model, FreezeReport]:
    """Backbone with head, frozen all but the last ``ft_fraction``; trained batch norms in ``batch_norm`` mode.

    Every layer not loaded from a weights file (the head; the whole network
    under ``weights: none``) starts from values drawn with NumPy from the
    seeded generators, the same on every Keras backend
    (:mod:`ultrasound_transfer.networks.initialization`).
    """
    backbone = build_backbone(name, image_size, weights)
    report = freeze_all_but_last(backbone, ft_fraction)
    set_batch_norm_mode(backbone, batch_norm)
    model = attach_head(backbone, n_classes, head)
    loaded = set() if resolve_weights(weights) is None else {id(layer) for layer in backbone.layers}
    fresh = [layer for layer in model.layers if id(layer) not in loaded]
    draw_initial_weights(fresh, np.random.default_rng(random.randint(0, 2**32 - 1)))
    return model, report


def feature_extractor(model: keras.Model, layer: str) -> keras.Model:
    """A model sharing ``model``'s weights that outputs the feature layer ``layer`` (``pooled`` or ``head``)."""
    return keras.Model(model.input, model.get_layer(FEATURE_LAYERS[layer]).output)


def to_network_input(images: np.ndarray, name: str, *, preprocessing: str = "keras") -> np.ndarray:
    """Gray uint8 images (N, S, S) -> the network's preprocessed RGB float32 input.

    ``preprocessing`` (:data:`~ultrasound_transfer.choices.INPUT_PREPROCESSINGS`):
    ``keras``, the network's own ``keras.applications`` ``preprocess_input``
    (ImageNet and random weights); or, for a weights file trained on other
    input, what its declaration says: ``caffe``, ``tf`` and ``torch`` are
    ``keras.applications.imagenet_utils.preprocess_input``'s modes,
    ``caffe_over_255`` is caffe's divided by 255 (RadImageNet's fine-tuning
    code, github.com/BMEII-AI/RadImageNet ``breast/breast_train.py``: an
    ``ImageDataGenerator`` with that ``preprocessing_function`` and
    ``rescale=1/255``, applied in that order), ``unit`` scales to 0..1.
    """
    rgb = np.repeat(images[..., None].astype(np.float32), 3, axis=-1)
    check_choice("weights preprocessing", preprocessing, INPUT_PREPROCESSINGS)
    if preprocessing == "keras":
        fed = check_model_name(name).preprocess(rgb)
    elif preprocessing == "unit":
        fed = rgb / 255.0
    elif preprocessing == "caffe_over_255":
        fed = keras.applications.imagenet_utils.preprocess_input(rgb, mode="caffe") / 255.0
    else:
        fed = keras.applications.imagenet_utils.preprocess_input(rgb, mode=preprocessing)
    return np.asarray(fed, dtype=np.float32)
