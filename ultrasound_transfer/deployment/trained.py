"""A trained dataset x network as one model for new scans: the ensemble of the study's splits.

The study trained one network per split (each fold of each repeat) and
fitted, beside each, a linear SVM with its Platt scaling and both operating
points (:func:`ultrasound_transfer.evaluation.transfer.split_classifiers`).
A new scan is read by all of them, as the external-validation stage reads
another dataset (:mod:`ultrasound_transfer.evaluation.transfer`): per
classifier, the probability of malignant is the mean of the splits'
probabilities and the operating point the mean of their thresholds.  No
network is retrained and no threshold is chosen again: the splits' thresholds
were chosen on validation images, and nothing is left to choose a new one on.
Retraining one network on all images would give a model that was never
evaluated; the ensemble is the model whose figures the study reports.

The ensemble is one Keras network of built-in layers only (:func:`ensemble_network`):

* input ``gray``: the study's square, ``(N, image_size, image_size)`` float32
  gray values 0..255, after decoding and ``normalize.resize``
  (:func:`ultrasound_transfer.deployment.scans.network_square`);
* gray to RGB and the backbone's own ``preprocess_input``, which for the
  five networks is per-channel affine (:func:`preprocessing_affine`, checked
  against ``keras.applications``);
* the frozen prefix once (it is the same in every split, checked by its
  fingerprint), then each split's trained tail, its dense head and its SVM
  (standardization, linear decision and Platt's sigmoid folded into one Dense
  layer);
* outputs ``dense`` and ``svm`` (N, 1): the ensemble's probabilities of malignant;
  ``dense_splits`` and ``svm_splits`` (N, splits): each split's.

Before anything is built, the request is checked against what the pipeline
recorded: the stages ran (``dvc.lock``), with the parameters now in
``params.yaml``, and every split's fold file is there.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import keras
import numpy as np
import yaml

from ultrasound_transfer.common import PipelineError, Stopwatch, load_params, log
from ultrasound_transfer.data.prepared import check_class_names, class_names_of, load_manifest, load_test_folds
from ultrasound_transfer.deployment.experiment import experiment_workspace
from ultrasound_transfer.evaluation.classifiers import FittedSvm
from ultrasound_transfer.evaluation.transfer import SplitClassifiers, split_classifiers
from ultrasound_transfer.networks.backbones import (
    HEAD_NORM_LAYER,
    HIDDEN_LAYER,
    OUTPUT_LAYER,
    POOLED_LAYER,
    build_classifier,
    set_batch_norm_mode,
    to_network_input,
)
from ultrasound_transfer.networks.fold_weights import frozen_fingerprint, load_fold_weights
from ultrasound_transfer.networks.frozen_prefix import has_frozen_part, split_at_frozen_prefix
from ultrasound_transfer.networks.runtime import seed_everything, set_precision
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.paths import MODELS_DIR
from ultrasound_transfer.settings import Settings

LOCK_FILE = Path("dvc.lock")
CLASSIFIERS = ("dense", "svm")
GRAY_INPUT = "gray"


@dataclass
class EnsembleParts:
    """The ensemble in parts: ``front`` runs once per image, each of ``tails`` once per split.

    ``front``: ``gray`` -> the preprocessed input through the shared frozen
    prefix, outputs ``cut0``, ``cut1``... (the preprocessed image itself when
    nothing is frozen); each tail: those tensors -> ``dense`` and ``svm``, its
    split's probabilities of malignant (N, 1).  The Keras ensemble and the
    ONNX file are both assembled from these same parts.
    """

    front: keras.Model
    tails: list[keras.Model]


@dataclass
class TrainedNetwork:
    """The study's splits of one dataset x network, and their ensemble."""

    dataset: str
    model_name: str
    settings: Settings
    class_names: list[str]
    splits: list[SplitClassifiers]
    folds: list[keras.Model]           # each split's fine-tuned network, in split order
    frozen_sha256: str
    parts: EnsembleParts               # the ensemble's front and tails (ONNX is assembled from them)
    network: keras.Model               # the ensemble (module docstring)

    @property
    def image_size(self) -> int:
        return self.settings.image_size

    @property
    def thresholds(self) -> dict[str, float]:
        """Per classifier, the ensemble's operating point: the mean of the splits' thresholds."""
        return {"dense": float(np.mean([s.dense_threshold for s in self.splits])),
                "svm": float(np.mean([s.svm.threshold for s in self.splits]))}


def stage_names(dataset: str, model_name: str) -> tuple[str, str]:
    """The DVC stages that train and evaluate ``dataset`` x ``model_name`` (as ``dvc.yaml``'s foreach names them)."""
    return f"finetune@{dataset}-{model_name}", f"evaluate@{dataset}-{model_name}"


def nested_value(params: dict, dotted: str):
    """``params["a"]["b"]`` for ``"a.b"``; None where any level is missing."""
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def changed_values(recorded, current, key: str) -> list[str]:
    """``key old when it ran, new now`` for every leaf of ``recorded`` that ``current`` does not match."""
    if isinstance(recorded, dict):
        current = current if isinstance(current, dict) else {}
        return [change for name, value in recorded.items()
                for change in changed_values(value, current.get(name), f"{key}.{name}")]
    return [] if recorded == current else [f"{key} {recorded!r} when it ran, {current!r} now"]


def check_trained(dataset: str, model_name: str, *, params: dict, lock_file: Path = LOCK_FILE) -> None:
    """Refuse a dataset x network that the pipeline did not train, or trained with other parameters.

    ``dvc.lock`` records each stage's parameters as it ran; a network trained
    under another ``ft_fraction``, or an SVM fitted under another operating-point
    rule, is not the one the current ``params.yaml`` describes.
    """
    rerun = "dvc repro {} {}".format(*stage_names(dataset, model_name))
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.is_file() else {}
    stages = (lock or {}).get("stages", {})
    for stage in stage_names(dataset, model_name):
        if stage not in stages:
            raise PipelineError(f"{dataset} x {model_name} was never trained here ({stage} is not in {lock_file}); "
                                f"list {dataset} in params datasets and {model_name} in models, then run '{rerun}'.")
        recorded = stages[stage].get("params", {}).get("params.yaml", {})
        changed = [change for key, value in recorded.items()
                   for change in changed_values(value, nested_value(params, key), key)]
        if changed:
            raise PipelineError(f"params.yaml changed since {stage} ran ({'; '.join(changed)}): the trained "
                                f"networks are not the ones params.yaml describes. Run '{rerun}', or restore the "
                                "parameters (git checkout params.yaml).")


def preprocessing_affine(model_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``scale`` and ``offset`` with ``preprocess_input(gray as RGB) == gray * scale + offset``.

    Read off the network's own ``keras.applications`` preprocessing
    (:func:`~ultrasound_transfer.networks.backbones.to_network_input`, the
    function training used), and checked at 255, so that a preprocessing that
    is not affine is refused instead of approximated.
    """
    probe = to_network_input(np.array([0, 1, 255], dtype=np.uint8).reshape(3, 1, 1), model_name)[:, 0, 0, :]
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
    """The fold's head as two built-in Dense layers: its standardization folded into the hidden layer.

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


def ensemble_parts(folds: list[keras.Model], splits: list[SplitClassifiers], *, model_name: str,
                   feature_layer: str) -> EnsembleParts:
    """The front and the splits' tails, of built-in Keras layers only (module docstring)."""
    size = int(folds[0].inputs[0].shape[1])
    gray = keras.Input((size, size), name=GRAY_INPUT)
    x = keras.layers.Reshape((size, size, 1), name="channel")(gray)
    x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    scale, offset = preprocessing_affine(model_name)
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
        hidden_layer, output_layer = plain_head(fold, name)
        hidden = hidden_layer(pooled)
        dense = output_layer(hidden)[:, 1:2]
        svm = svm_layer(split.svm, f"{name}_svm")(pooled if feature_layer == "pooled" else hidden)
        tails.append(keras.Model(inputs, {"dense": dense, "svm": svm}, name=name))
    return EnsembleParts(front, tails)


def ensemble_network(parts: EnsembleParts) -> keras.Model:
    """The parts as one network: ``gray`` -> ``dense``, ``svm`` (means over splits), ``dense_splits``, ``svm_splits``.
    """
    gray = keras.Input(parts.front.inputs[0].shape[1:], name=GRAY_INPUT)
    cached = parts.front(gray)
    readings = [tail([cached[f"cut{i}"] for i in range(len(cached))]) for tail in parts.tails]
    outputs = {}
    for name in CLASSIFIERS:
        values = [reading[name] for reading in readings]
        outputs[name] = mean_of(values, name)
        outputs[f"{name}_splits"] = (keras.layers.Concatenate(name=f"{name}_splits")(values) if len(values) > 1
                                     else keras.layers.Identity(name=f"{name}_splits")(values[0]))
    return keras.Model(gray, outputs, name=parts.front.name.replace("_front", "_ensemble"))


def check_fold_files(dataset: str, model_name: str, n_splits: int, rerun: str) -> list[Path]:
    """The ``n_splits`` fold files of the network, or a refusal naming the first missing one and ``rerun``."""
    paths = [MODELS_DIR / dataset / model_name / "weights" / f"fold{k}.weights.npz" for k in range(1, n_splits + 1)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PipelineError(f"{missing[0]} is missing ({len(missing)} of {n_splits} fold files); run '{rerun}'.")
    return paths


def load_trained_network(dataset: str, model_name: str, settings: Settings) -> TrainedNetwork:
    """The study's splits of ``dataset`` x ``model_name`` and their ensemble, checked before anything is built."""
    clock = Stopwatch()
    check_trained(dataset, model_name, params=load_params())
    manifest = load_manifest(dataset)
    class_names = check_class_names(class_names_of(manifest))
    rerun = "dvc repro {} {}".format(*stage_names(dataset, model_name))
    if len(class_names) != 2:
        raise PipelineError(f"{dataset} has classes {class_names}; new scans are read as benign or malignant at an "
                            "operating point, which needs two classes (for BUSI, normalize.busi_classes: "
                            f"[benign, malignant]), then run '{rerun}'.")
    paths = check_fold_files(dataset, model_name, len(load_test_folds(dataset, len(manifest))), rerun)
    splits = list(split_classifiers(dataset, model_name, settings))
    cfg = settings.finetune
    set_precision(cfg.precision)
    folds, frozen = [], ""
    for path in paths:
        # Reseeded per split: every build draws the same frozen part, which each fold file's fingerprint checks.
        seed_everything(settings.seed, cfg.deterministic_ops)
        fold, _ = build_classifier(model_name, image_size=settings.image_size, n_classes=2, weights=settings.weights,
                                   ft_fraction=settings.ft_fraction, head=cfg.head, batch_norm=cfg.batch_norm)
        frozen = frozen or frozen_fingerprint(fold)
        load_fold_weights(fold, path, frozen, rerun=rerun)
        # Plain Keras layers, so that the saved ensemble loads without this project: at inference the
        # inference-mode subclass computes what BatchNormalization computes.
        set_batch_norm_mode(fold, "training")
        folds.append(fold)
    parts = ensemble_parts(folds, splits, model_name=model_name, feature_layer=settings.feature_layer)
    log("ensemble", f"{dataset}/{model_name}: the ensemble of {len(folds)} splits is ready ({clock})")
    return TrainedNetwork(dataset, model_name, settings, class_names, splits, folds, frozen, parts,
                          ensemble_network(parts))


@contextlib.contextmanager
def requested_network(dataset: str, model_name: str, *, experiment: str | None) -> Iterator[TrainedNetwork]:
    """:func:`load_trained_network` under the parameters of the workspace, or of DVC experiment ``experiment``;
    inside the block the working directory is that experiment's, so its params and metrics files can be read too.
    """
    with experiment_workspace(experiment, dataset=dataset, model=model_name):
        yield load_trained_network(dataset, model_name, load_settings())


def load_requested_network(dataset: str, model_name: str, *, experiment: str | None) -> TrainedNetwork:
    """The network of :func:`requested_network`, for callers that need nothing else of the experiment."""
    with requested_network(dataset, model_name, experiment=experiment) as trained:
        return trained
