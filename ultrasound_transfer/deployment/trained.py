"""A trained dataset x network as one model for new scans: the ensemble of the study's splits.

The study trained one network per split (each fold of each repeat) and
``evaluate`` fitted, beside each, a linear SVM with its Platt scaling and
both operating points, and kept them
(:mod:`ultrasound_transfer.outputs.trained_study`: the fold networks, their
recipe and the fitted classifiers, checked to belong together).  A new scan
is read by all of them, as the external-validation stage reads another
dataset (:mod:`ultrasound_transfer.evaluation.external_validation`): per
classifier, the probability of malignant is the mean of the splits'
probabilities and the operating point the mean of their thresholds.  Nothing
is retrained or refitted, and nothing is read from ``params.yaml``: the
preprocessing, the network and every classifier are the artifact's.
Retraining one network on all images would give a model that was never
evaluated; the ensemble is made only of the split models whose
cross-validated figures the study reports, though it has none of its own
(no study image is new to all of them; ``external`` measures it on another
dataset).

The ensemble is one Keras network of built-in layers only (:func:`ensemble_network`):

* input ``gray``: the study's square, ``(N, image_size, image_size)`` float32
  gray values 0..255, after decoding and the recorded squaring rule
  (:func:`ultrasound_transfer.deployment.scans.network_square`);
* gray to RGB and the backbone's own ``preprocess_input``, which for the
  five networks is per-channel affine (:func:`preprocessing_affine`, checked
  against ``keras.applications``);
* the frozen prefix once (it is the same in every split, checked by its
  fingerprint), then each split's trained tail, its dense head (with its
  Platt scaling folded into one Dense layer), its SVM
  (standardization, linear decision and Platt's sigmoid folded into one Dense
  layer) and its novelty (:mod:`ultrasound_transfer.evaluation.novelty`:
  the SVM's standardization, squared, averaged by one Dense layer);
* outputs ``dense`` and ``svm`` (N, 1): the ensemble's probabilities of malignant;
  ``dense_splits`` and ``svm_splits`` (N, splits): each split's; ``novelty``
  (N, 1): the mean over splits of each split's novelty.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import keras
import numpy as np

from ultrasound_transfer.choices import CLASSIFIERS
from ultrasound_transfer.common import PipelineError, Stopwatch, load_params, log
from ultrasound_transfer.deployment.experiment_files import experiment_files
from ultrasound_transfer.evaluation.classifiers import FittedDense, FittedSvm, SplitClassifiers
from ultrasound_transfer.networks.backbones import (
    HEAD_NORM_LAYER,
    HIDDEN_LAYER,
    OUTPUT_LAYER,
    POOLED_LAYER,
    set_batch_norm_mode,
    to_network_input,
)
from ultrasound_transfer.networks.frozen_prefix import has_frozen_part, split_at_frozen_prefix
from ultrasound_transfer.outputs.fold_networks import build_network, load_fold
from ultrasound_transfer.outputs.trained_study import TrainedStudy, load_trained_study, parameter_changes

GRAY_INPUT = "gray"
NOVELTY = "novelty"


@dataclass
class EnsembleParts:
    """The ensemble in parts: ``front`` runs once per image, each of ``tails`` once per split.

    ``front``: ``gray`` -> the preprocessed input through the shared frozen
    prefix, outputs ``cut0``, ``cut1``... (the preprocessed image itself when
    nothing is frozen); each tail: those tensors -> ``dense``, ``svm`` (its
    split's probabilities of malignant) and ``novelty``, each (N, 1).  The
    Keras ensemble and the ONNX file are both assembled from these same parts.
    """

    front: keras.Model
    tails: list[keras.Model]


@dataclass
class TrainedNetwork:
    """The study's splits of one dataset x network, and their ensemble."""

    study: TrainedStudy
    folds: list[keras.Model]           # each split's fine-tuned network, in split order
    parts: EnsembleParts               # the ensemble's front and tails (ONNX is assembled from them)
    network: keras.Model               # the ensemble (module docstring)

    @property
    def dataset(self) -> str:
        return self.study.recipe.dataset

    @property
    def model_name(self) -> str:
        return self.study.recipe.model

    @property
    def class_names(self) -> list[str]:
        return list(self.study.recipe.class_names)

    @property
    def image_size(self) -> int:
        return self.study.recipe.preprocessing.image_size

    @property
    def resize(self) -> str:
        return self.study.recipe.preprocessing.resize

    @property
    def splits(self) -> tuple[SplitClassifiers, ...]:
        return self.study.classifiers.splits

    @property
    def thresholds(self) -> dict[str, float]:
        """Per classifier, the ensemble's operating point: the mean of the splits' thresholds."""
        return self.study.classifiers.thresholds

    @property
    def novelty_threshold(self) -> float:
        return self.study.classifiers.novelty_threshold


def preprocessing_affine(model_name: str, preprocessing: str = "keras") -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``scale`` and ``offset`` with ``preprocess_input(gray as RGB) == gray * scale + offset``.

    Read off the network's own ``keras.applications`` preprocessing
    (:func:`~ultrasound_transfer.networks.backbones.to_network_input`, the
    function training used), and checked at 255, so that a preprocessing that
    is not affine is refused instead of approximated.
    """
    probe = to_network_input(np.array([0, 1, 255], dtype=np.uint8).reshape(3, 1, 1), model_name,
                             preprocessing=preprocessing)[:, 0, 0, :]
    offset, scale = probe[0], probe[1] - probe[0]
    if not np.allclose(probe[2], offset + 255 * scale, rtol=1e-5, atol=1e-4):
        raise PipelineError(f"{model_name}: its preprocess_input is not affine per channel; the ensemble network "
                            "cannot carry it as one layer.")
    return scale.astype(np.float32), offset.astype(np.float32)


def dense_layer(kernel: np.ndarray, bias: np.ndarray, *, activation: str, name: str) -> keras.layers.Dense:
    """A built-in Dense layer holding ``kernel`` and ``bias`` (float32)."""
    layer = keras.layers.Dense(kernel.shape[1], activation=activation, name=name, dtype="float32")
    layer.build((None, kernel.shape[0]))
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return layer


def plain_head(fold: keras.Model, name: str) -> tuple[keras.layers.Dense, keras.layers.Dense]:
    """The fold's head as two built-in Dense layers (hidden, softmax): its standardization folded into the
    hidden layer.

    ``W (x - mean) * scale + b == (W * scale) x + (b - W (mean * scale))``; dropout
    is the identity at inference.
    """
    kernel, bias = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in fold.get_layer(HIDDEN_LAYER).weights)
    if HEAD_NORM_LAYER in {layer.name for layer in fold.layers}:
        norm = fold.get_layer(HEAD_NORM_LAYER)
        mean, scale = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in (norm.mean, norm.scale))
        bias = bias - (mean * scale) @ kernel
        kernel = kernel * scale[:, None]
    out_kernel, out_bias = (keras.ops.convert_to_numpy(v) for v in fold.get_layer(OUTPUT_LAYER).weights)
    return (dense_layer(kernel, bias, activation="relu", name=f"{name}_head_dense"),
            dense_layer(out_kernel, out_bias, activation="softmax", name=f"{name}_predictions"))


def dense_head_layer(fold: keras.Model, dense: FittedDense, name: str):
    """The split's dense head read as a probability of malignant (N, 1), as ``evaluate`` reads it: the softmax's
    malignant column, or, Platt-scaled, ``sigmoid(-(a (z1 - z0) + b))`` of its logits, as one Dense layer.

    A function of the hidden layer's output.
    """
    out_kernel, out_bias = (keras.ops.convert_to_numpy(v).astype(np.float64)
                            for v in fold.get_layer(OUTPUT_LAYER).weights)
    if dense.platt is None:
        softmax = dense_layer(out_kernel, out_bias, activation="softmax", name=f"{name}_predictions")
        return lambda hidden: softmax(hidden)[:, 1:2]
    a, b = dense.platt.a, dense.platt.b
    kernel = -a * (out_kernel[:, 1] - out_kernel[:, 0])
    bias = -(a * (out_bias[1] - out_bias[0]) + b)
    return dense_layer(kernel[:, None], np.array([bias]), activation="sigmoid", name=f"{name}_dense_calibrated")


def svm_layer(svm: FittedSvm, name: str) -> keras.layers.Dense:
    """The split's SVM read as a probability: standardize, linear decision, Platt's sigmoid, as one Dense layer.

    decision ``d = w . (x - mu) / sigma + c``; Platt ``p = 1 / (1 + exp(a d + b))
    = sigmoid(-(a d + b))``.
    """
    if svm.platt is None:
        raise PipelineError("the SVM of a task with more than two classes has no probability of malignant.")
    scaler, linear = svm.model.named_steps["standardscaler"], svm.model.named_steps["linearsvc"]
    weights = linear.coef_[0] / scaler.scale_
    intercept = linear.intercept_[0] - float(np.dot(weights, scaler.mean_))
    a, b = svm.platt.a, svm.platt.b
    return dense_layer((-a * weights)[:, None], np.array([-(a * intercept + b)]), activation="sigmoid", name=name)


def mean_of(tensors: list, name: str):
    """The splits' mean as a layer (Keras' ``Average`` needs two inputs or more)."""
    if len(tensors) == 1:
        return keras.layers.Identity(name=name)(tensors[0])
    return keras.layers.Average(name=name)(tensors)


def novelty_layer(split: SplitClassifiers, name: str):
    """The split's novelty of its SVM's input, as built-in layers: ``mean(((x - mu) / scale) ** 2) / median``
    (:class:`~ultrasound_transfer.evaluation.novelty.NoveltyReference`).

    A function of a tensor: the standardization as a ``Rescaling``, the square
    as a ``Multiply`` of it with itself, the mean and the division by the
    held-out median as one ``Dense`` layer.
    """
    reference = split.novelty
    scale = 1.0 / reference.scale
    standardize = keras.layers.Rescaling(scale=scale.tolist(), offset=(-reference.mean * scale).tolist(),
                                         name=f"{name}_standardize", dtype="float32")
    width = len(scale)
    average = dense_layer(np.full((width, 1), 1.0 / (width * reference.median)), np.zeros(1), activation="linear",
                          name=f"{name}_novelty")

    def apply(x):
        z = standardize(x)
        return average(keras.layers.Multiply(name=f"{name}_squared")([z, z]))

    return apply


def ensemble_parts(folds: list[keras.Model], splits: list[SplitClassifiers], *, model_name: str,
                   feature_layer: str, preprocessing: str = "keras") -> EnsembleParts:
    """The front and the splits' tails, of built-in Keras layers only (module docstring)."""
    size = int(folds[0].inputs[0].shape[1])
    gray = keras.Input((size, size), name=GRAY_INPUT)
    x = keras.layers.Reshape((size, size, 1), name="channel")(gray)
    x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    scale, offset = preprocessing_affine(model_name, preprocessing)
    x = keras.layers.Rescaling(scale=scale.tolist(), offset=offset.tolist(), name="preprocess_input")(x)
    cut = split_at_frozen_prefix(folds[0]).cut if has_frozen_part(folds[0]) else []
    # Keras numbers unnamed layers (InceptionV3's conv2d_94...) by what the process built before, so each
    # split's network is cut at the same positions, not at the same names (as fold files key layers).
    positions = [[layer.name for layer in folds[0].layers].index(name) for name in cut]
    if cut:
        prefix = keras.Model(folds[0].inputs, [folds[0].get_layer(n).output for n in cut], name="frozen_prefix")
        cached = keras.tree.flatten(prefix(x))
    else:
        cached = [x]
    front = keras.Model(gray, {f"cut{i}": t for i, t in enumerate(cached)}, name=f"{model_name}_front")
    tails = []
    for split, fold in zip(splits, folds):
        name = f"split{split.k}"
        inputs = [keras.Input(t.shape[1:], name=f"cut{i}") for i, t in enumerate(cached)]
        if POOLED_LAYER in cut:
            pooled = inputs[cut.index(POOLED_LAYER)]
        else:
            starts = [fold.layers[i].output for i in positions] if cut else fold.inputs
            body = keras.Model(starts, fold.get_layer(POOLED_LAYER).output, name=f"{name}_backbone")
            pooled = body(inputs if cut else inputs[0])
        hidden_layer, _ = plain_head(fold, name)
        hidden = hidden_layer(pooled)
        dense = dense_head_layer(fold, split.dense, name)(hidden)
        svm_input = pooled if feature_layer == "pooled" else hidden
        svm = svm_layer(split.svm, f"{name}_svm")(svm_input)
        novelty = novelty_layer(split, name)(svm_input)
        tails.append(keras.Model(inputs, {"dense": dense, "svm": svm, NOVELTY: novelty}, name=name))
    return EnsembleParts(front, tails)


def ensemble_network(parts: EnsembleParts) -> keras.Model:
    """The parts as one network: ``gray`` -> ``dense``, ``svm`` (means over splits), ``dense_splits``,
    ``svm_splits`` and ``novelty`` (the mean of the splits')."""
    gray = keras.Input(parts.front.inputs[0].shape[1:], name=GRAY_INPUT)
    cached = parts.front(gray)
    readings = [tail([cached[f"cut{i}"] for i in range(len(cached))]) for tail in parts.tails]
    outputs = {}
    for name in CLASSIFIERS:
        values = [reading[name] for reading in readings]
        outputs[name] = mean_of(values, name)
        outputs[f"{name}_splits"] = (keras.layers.Concatenate(name=f"{name}_splits")(values) if len(values) > 1
                                     else keras.layers.Identity(name=f"{name}_splits")(values[0]))
    outputs[NOVELTY] = mean_of([reading[NOVELTY] for reading in readings], NOVELTY)
    return keras.Model(gray, outputs, name=parts.front.name.replace("_front", "_ensemble"))


def load_trained_network(dataset: str, model_name: str) -> TrainedNetwork:
    """The trained study of ``dataset`` x ``model_name`` (checked before anything is built) and its ensemble."""
    clock = Stopwatch()
    study = load_trained_study(dataset, model_name)
    recipe = study.recipe
    if len(recipe.class_names) != 2:
        raise PipelineError(f"{dataset} has classes {list(recipe.class_names)}; new scans are read as benign or "
                            "malignant at an operating point, which needs two classes (for BUSI, "
                            f"normalize.busi_classes: [benign, malignant]), then run '{study.rerun}'.")
    folds = []
    for split in study.classifiers.splits:
        # Built afresh per split, from the recorded seed: every build has the same frozen part, which
        # build_network checks against the recorded fingerprint.
        fold = build_network(recipe)
        load_fold(fold, recipe, split.k)
        # Plain Keras layers, so that the saved ensemble loads without this project: at inference the
        # inference-mode subclass computes what BatchNormalization computes.
        set_batch_norm_mode(fold, "training")
        folds.append(fold)
    parts = ensemble_parts(folds, list(study.classifiers.splits), model_name=model_name,
                           feature_layer=study.classifiers.feature_layer,
                           preprocessing=study.recipe.input_preprocessing)
    log("ensemble", f"{dataset}/{model_name}: the ensemble of {len(folds)} splits is ready ({clock})")
    return TrainedNetwork(study, folds, parts, ensemble_network(parts))


def note_parameter_changes(study: TrainedStudy, command: str) -> None:
    """One line naming every parameter edited since the study was made: such an edit has not taken effect."""
    changes = parameter_changes(study, load_params())
    if changes:
        log(command, f"note: params.yaml has changed since {study.recipe.dataset} x {study.recipe.model} was "
                     f"trained ({'; '.join(changes)}); the trained study is read as it was made. To use the new "
                     f"parameters, run '{study.rerun}' first.")


@contextlib.contextmanager
def requested_network(dataset: str, model_name: str, *, experiment: str | None,
                      command: str) -> Iterator[TrainedNetwork]:
    """:func:`load_trained_network` of the workspace, or of DVC experiment ``experiment``; inside the block the
    working directory holds that experiment's files of the network (and its metrics), so they can be read too."""
    with experiment_files(experiment, dataset=dataset, model=model_name):
        trained = load_trained_network(dataset, model_name)
        note_parameter_changes(trained.study, command)
        yield trained


def load_requested_network(dataset: str, model_name: str, *, experiment: str | None,
                           command: str) -> TrainedNetwork:
    """The network of :func:`requested_network`, for callers that need nothing else of the experiment."""
    with requested_network(dataset, model_name, experiment=experiment, command=command) as trained:
        return trained
