"""Stage ``finetune``: train one network on every fold of one dataset, and extract the SVM's features.

Usage: ``python -m stages.finetune DATASET MODEL``.  Reads params
``ft_fraction``, ``weights``, ``seed`` and section ``finetune``.

For each fold k the network starts from the same initial state (see
:class:`ultrasound_transfer.networks.fitting.FoldReset`), trains on the fold's training part with an
inner, grouped validation split for early stopping, and predicts the test
fold.  When part of the network is frozen and augmentation is off, the frozen
part runs once over all images and only the trained tail runs per epoch
(:mod:`ultrasound_transfer.networks.frozen_prefix`); the result is the same, faster.  Finished folds
are kept in ``models/<dataset>/<model>/.unfinished/`` until the last one is
done, so an interrupted run resumes at the first unfinished fold
(:mod:`ultrasound_transfer.networks.checkpoints`).  Outputs in ``models/<dataset>/<model>/``:

* ``weights/fold<k>.weights.npz``: what fold k trained (the trained layers
  and the head) and a fingerprint of the frozen part it was trained on
  (:mod:`ultrasound_transfer.networks.fold_weights`); DVC-cached, so queued
  experiments and the run-cache restore finished folds instead of retraining;
* ``training/network.json``: the recipe that rebuilds the fold networks and
  feeds them (network, classes, the prepared data's preprocessing, initial
  weights, ``ft_fraction``, head, seed, the frozen part's fingerprint, each
  fold file's SHA-256) and its provenance (parameters, code revision, the
  data's hashes): what every later command reads instead of ``params.yaml``
  (:mod:`ultrasound_transfer.outputs.training_record`);
* ``training/history.csv``: per fold and epoch, loss and accuracy (train and
  validation);
* ``training/dense_predictions.csv``: the dense softmax head's class
  probabilities for each test-fold image and each inner validation image
  (``part``), on which ``evaluate`` chooses the operating point;
* ``training/fold_parts.csv``: per fold, which images the head was fitted on
  (``fit``), stopped early on (``validation``) and tested on (``test``); the
  SVM in ``evaluate`` learns from the same ``fit`` images;
* ``data/features/<dataset>/<model>/fold<k>.npz``: the SVM's input, both
  feature layers of every image (in manifest order, with their ``ids``) under
  fold k's network: ``pooled`` (the global-average-pooled backbone output that
  feeds the head) and ``head`` (the head's hidden Dense layer); ``evaluate``
  (and ``external``) read the one ``features.layer`` names.  On the cached
  path they come from the same pass over the frozen prefix that training
  used, so the prefix runs once per dataset and network;
* ``training/freezing.json``: per fold, weight-carrying layers in total and
  trained, trainable parameters and their share of the backbone's, first
  trained layer; and under ``training``
  the path taken (frozen-prefix cache or full network) and where the cut
  landed;
* ``metrics/plots/training_{loss,accuracy}/<dataset>/<model>.csv``: the same
  history in the long form ``dvc plots`` draws (epoch, value, series = fold
  and part).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd

from ultrasound_transfer.backbone_weights import check_weights_file, input_preprocessing
from ultrasound_transfer.common import (
    Progress,
    Stopwatch,
    atomic_dir,
    exclusive_lock,
    load_params,
    log,
    parse_args,
    run_stage,
)
from ultrasound_transfer.data.grouping import inner_validation_split
from ultrasound_transfer.networks.backbones import FEATURE_LAYERS, build_classifier, check_image_size, check_model_name
from ultrasound_transfer.networks.checkpoints import FoldCheckpoints, run_fingerprint
from ultrasound_transfer.networks.feature_extraction import LayerReader, standardize_head_input
from ultrasound_transfer.networks.fitting import EpochLog, FoldReset, class_weights, compile_classifier, fit_fold
from ultrasound_transfer.networks.fold_weights import frozen_fingerprint, save_fold_weights
from ultrasound_transfer.networks.heap import keep_freed_memory
from ultrasound_transfer.networks.runtime import (
    check_data_parallel_supported,
    data_parallel_scope,
    seed_everything,
    set_precision,
)
from ultrasound_transfer.networks.training_paths import TrainingPath, choose_training_path
from ultrasound_transfer.outputs import features as features_output
from ultrasound_transfer.outputs import fold_networks, prepared, training_record
from ultrasound_transfer.outputs import folds as folds_output
from ultrasound_transfer.outputs.folds import load_fold_groups, load_test_folds, train_indices
from ultrasound_transfer.outputs.prepared import Prepared, load_prepared, load_preprocessing
from ultrasound_transfer.outputs.provenance import code_revision, file_sha256
from ultrasound_transfer.outputs.training_record import (
    NetworkRecipe,
    history_table,
    parts_table,
    predictions_table,
    write_curves,
    write_record,
)
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.settings import FinetuneSettings, Settings
from ultrasound_transfer.source_files import REPO_ROOT, imported_source_files

# Code whose change makes saved folds of an interrupted run stale: all that this stage runs.
CODE_FILES = [REPO_ROOT / path for path in imported_source_files("stages.finetune")]


def feature_reader(path: TrainingPath, network: keras.Model) -> LayerReader:
    """The unit's one reader of every feature layer the SVM may read (``features.layer``), through ``path``: it
    gives each fold's features of every image after training and, before, the pooled features of its fit images
    that the head's standardization is fitted to (the pooled layer is one of them)."""
    return LayerReader.through(path, network, list(FEATURE_LAYERS.values()))


def fold_features(reader: LayerReader) -> dict[str, np.ndarray]:
    """Every feature layer of ``reader`` (:func:`feature_reader`), for all images, under the fold's trained
    weights."""
    return dict(zip(FEATURE_LAYERS, reader()))


def checkpoint_fingerprint(settings: Settings, dataset: str, model_name: str, *, weights_sha256: str) -> str:
    """What an interrupted run's saved folds must match to be reused (``weights_sha256``: the weights file's, from
    :func:`~ultrasound_transfer.backbone_weights.check_weights_file`)."""
    weights = settings.weights[model_name]
    # The file's content and the preprocessing declared with it, not only its name: a replaced file restarts.
    what = {"ft_fraction": settings.ft_fraction, "weights": weights, "weights_sha256": weights_sha256,
            "input_preprocessing": input_preprocessing(weights), "seed": settings.seed,
            "finetune": asdict(settings.finetune), "dataset": dataset, "model": model_name,
            "backend": keras.backend.backend()}
    return run_fingerprint(what, [*data_files(dataset), *CODE_FILES])


def data_files(dataset: str) -> list[Path]:
    """What the folds trained on: the prepared images, their manifest and preprocessing, the folds."""
    where = prepared.folder(dataset)
    return [where / prepared.IMAGES, where / prepared.MANIFEST, where / prepared.PREPROCESSING,
            folds_output.path(dataset)]


# What the recipe says of the cross-validation the folds were trained in.
FOLDS_FACTS = ("n_splits", "repeats", "grouping", "seed", "n_images", "n_groups")
# The parameters finetune runs under (dvc.yaml's params of the stage), recorded in the recipe's provenance.
RECORDED_PARAMS = ("ft_fraction", "weights", "seed", "finetune")


def network_recipe(dataset: str, model_name: str, settings: Settings, *, class_names: list[str], frozen: str,
                   fold_files: list[Path], weights_sha256: str) -> NetworkRecipe:
    """What rebuilds this dataset x network's fold networks and feeds them (training/network.json)."""
    cfg, weights = settings.finetune, settings.weights[model_name]
    preprocessing = load_preprocessing(dataset)
    params = load_params()
    # The folds' parameters too: they decided which images each split trained on.
    recorded = {key: params[key] for key in RECORDED_PARAMS} | {
        "image_size": preprocessing.image_size, "normalize": {"resize": preprocessing.resize}, "cv": params["cv"]}
    return NetworkRecipe(
        dataset=dataset, model=model_name, class_names=tuple(class_names), preprocessing=preprocessing,
        weights=weights, input_preprocessing=input_preprocessing(weights), weights_sha256=weights_sha256,
        ft_fraction=settings.ft_fraction, head=cfg.head, batch_norm=cfg.batch_norm,
        precision=cfg.precision, seed=settings.seed, deterministic_ops=cfg.deterministic_ops, frozen_sha256=frozen,
        fold_sha256=tuple(file_sha256(p) for p in fold_files), backend=keras.backend.backend(),
        keras=keras.__version__, folds={key: folds_output.load_record(dataset)[key] for key in FOLDS_FACTS},
        provenance={"params": recorded, "code_revision": code_revision(),
                    "data_sha256": {str(p): file_sha256(p) for p in data_files(dataset)}})


def write_outputs(dataset: str, model_name: str, checkpoints: FoldCheckpoints, *, ids: np.ndarray, n_folds: int,
                  freezing: dict, recipe: Callable[[list[Path]], NetworkRecipe]) -> None:
    """Move the finished folds into the stage's outputs, all or nothing; ``recipe`` makes the network recipe of
    the fold files as written."""
    splits = range(1, n_folds + 1)
    with atomic_dir(fold_networks.folder(dataset, model_name)) as weights_dir, \
            atomic_dir(training_record.folder(dataset, model_name)) as training_dir, \
            atomic_dir(features_output.folder(dataset, model_name)) as features_dir:
        for k in splits:
            shutil.copyfile(checkpoints.weights(k), weights_dir / checkpoints.weights(k).name)
            with np.load(checkpoints.features(k)) as features:
                features_output.write_fold(features_dir, k, ids=ids, layers=dict(features))
        history = pd.concat([checkpoints.table(k, "history") for k in splits])
        write_record(training_dir, recipe=recipe([weights_dir / checkpoints.weights(k).name for k in splits]),
                     history=history, dense_predictions=pd.concat([checkpoints.table(k, "predictions")
                                                                   for k in splits]),
                     parts=pd.concat([checkpoints.table(k, "parts") for k in splits]), freezing=freezing)
    write_curves(dataset, model_name, history)


@dataclass(frozen=True)
class FoldJob:
    """What :func:`train_folds` trains on: the prepared data, its test folds and groups, and the seed."""

    data: Prepared
    folds: list[np.ndarray]
    groups: np.ndarray
    seed: int


def train_folds(
    path: TrainingPath, network: keras.Model, job: FoldJob, *, cfg: FinetuneSettings, checkpoints: FoldCheckpoints,
    save_weights: Callable[[Path], None], tag: str, clock: Stopwatch,
) -> None:
    """Train and test every fold not finished yet, saving each to ``checkpoints``.

    Each fold restores the initial weights and optimizer state and reseeds
    with ``seed + k``, so it gives the same result whether or not the folds
    before it ran in this process; then the head's standardization (if any)
    is fitted to the fold's fit images, and training starts.
    """
    reset = FoldReset(path.model)
    reader = feature_reader(path, network)
    data, folds, groups, seed = job.data, job.folds, job.groups, job.seed
    y = data.labels
    progress = Progress(cfg.epochs * len(folds), "epochs", upper_bound=True)
    for k, test in enumerate(folds, start=1):
        if checkpoints.is_finished(k):
            progress.skip(cfg.epochs)
            continue
        prefix = f"{tag} fold {k}/{len(folds)}"
        reset.restore()
        seed_everything(seed + k, cfg.deterministic_ops)
        train = train_indices(test, len(y))
        fit, val = inner_validation_split(y[train], groups[train], cfg.validation_fraction, seed + k)
        fit, val = train[fit], train[val]
        log("finetune", f"{prefix}: training on {len(fit)} images, validating on {len(val)} "
            f"({len(val) / len(train):.0%} of the training part, in whole groups), testing on {len(test)}")
        standardize_head_input(network, reader, fit)
        history = fit_fold(
            path.model, path.batches(fit, y, seed=seed + k), path.batches(val, y) if len(val) else None,
            epochs=cfg.epochs, patience=cfg.patience, class_weight=class_weights(y[fit], cfg.class_weight),
            progress=EpochLog("finetune", prefix, cfg.epochs, progress),
        )
        [probs] = path.predict(test)
        ids = data.manifest["id"].to_numpy()
        predicted = [predictions_table(ids[test], k, part="test", labels=y[test], probabilities=probs,
                                       class_names=data.class_names)]
        if len(val):     # the operating point of evaluate is chosen on these
            predicted.append(predictions_table(ids[val], k, part="validation", labels=y[val],
                                               probabilities=path.predict(val)[0],
                                               class_names=data.class_names))
        extraction = Stopwatch()
        features = fold_features(reader)
        log("finetune", f"{prefix}: features of {len(y)} images ({extraction})")
        checkpoints.save(k, save_weights, {
            "predictions": pd.concat(predicted, ignore_index=True),
            "history": history_table(history, k),
            "parts": parts_table(ids, k, {"fit": fit, "validation": val, "test": test}),
        }, features=features)
        accuracy = float(np.mean(probs.argmax(axis=1) == y[test]))
        log("finetune", f"{prefix}: dense-head test accuracy {accuracy:.3f} ({clock})")


def main(argv: list[str]) -> None:
    dataset, model_name = parse_args(argv, ["dataset", "model"], "python -m stages.finetune DATASET MODEL")
    keep_freed_memory()
    settings = load_settings()
    check_model_name(model_name)
    # One run per output: a second would overwrite this one's folds and resume state.
    with exclusive_lock(fold_networks.folder(dataset, model_name).parent / ".finetune.lock",
                        f"finetune of {dataset}/{model_name}"):
        finetune_model(dataset, model_name, settings)


def finetune_model(dataset: str, model_name: str, settings: Settings) -> None:
    """Train every fold of ``dataset`` x ``model_name`` (resuming an interrupted run) and write the outputs."""
    cfg = settings.finetune
    check_data_parallel_supported(cfg.data_parallel)
    ft_fraction, seed = settings.ft_fraction, settings.seed
    data = load_prepared(dataset)
    folds = load_test_folds(dataset, len(data.manifest))
    groups = load_fold_groups(dataset)
    image_size = data.images.shape[1]
    check_image_size(model_name, image_size)
    tag = f"{dataset}/{model_name}"
    clock = Stopwatch()
    weights = settings.weights[model_name]
    # Its declaration and checksum, before the network is built: the file is read whole once, here.
    weights_sha256 = check_weights_file(model_name, weights)
    out = fold_networks.folder(dataset, model_name).parent
    checkpoints = FoldCheckpoints(out / ".unfinished", checkpoint_fingerprint(settings, dataset, model_name,
                                                                              weights_sha256=weights_sha256))
    if checkpoints.finished():
        log("finetune", f"{tag}: resuming an interrupted run; folds {checkpoints.finished()} are done")

    set_precision(cfg.precision)
    seed_everything(seed, cfg.deterministic_ops)
    with data_parallel_scope(cfg.data_parallel):
        model, freeze = build_classifier(
            model_name, image_size=image_size, n_classes=len(data.class_names), weights=weights,
            ft_fraction=ft_fraction, head=cfg.head, batch_norm=cfg.batch_norm,
        )
        frozen = frozen_fingerprint(model)
        log("finetune", f"{tag}: ft_fraction={ft_fraction} trains {freeze.trained_layers}/{freeze.total_layers} "
            f"weight layers from '{freeze.first_trained_layer or '(head only)'}', "
            f"{freeze.trainable_params:,} backbone params ({freeze.trained_share:.0%} of its "
            f"{freeze.backbone_params:,}) ({clock})")
        with choose_training_path(
            model, data.images, model_name=model_name, batch_size=cfg.batch_size,
            preprocessing=input_preprocessing(weights), cache=cfg.cache, augmentation=cfg.augmentation,
            scratch_dir=out,
        ) as path:
            shown = ", ".join(f"{key}={value}" for key, value in path.description.items())
            log("finetune", f"{tag}: {shown} ({clock})")
            compile_classifier(path.model, optimizer=cfg.optimizer, learning_rate=cfg.learning_rate,
                               jit_compile=cfg.jit_compile, backbone_lr_factor=cfg.backbone_lr_factor)
            train_folds(path, model, FoldJob(data, folds, groups, seed), cfg=cfg, checkpoints=checkpoints,
                        save_weights=lambda tmp: save_fold_weights(model, tmp, frozen), tag=tag, clock=clock)

    freezing = {
        "model": model_name, "ft_fraction": ft_fraction, "batch_norm": cfg.batch_norm, "training": path.description,
        "folds": [{"fold": k, **freeze.as_dict()} for k in range(1, len(folds) + 1)],
    }
    write_outputs(dataset, model_name, checkpoints, ids=data.manifest["id"].to_numpy(), n_folds=len(folds),
                  freezing=freezing, recipe=lambda files: network_recipe(
                      dataset, model_name, settings, class_names=data.class_names, frozen=frozen, fold_files=files,
                      weights_sha256=weights_sha256))
    checkpoints.remove()
    log("finetune", f"{tag}: done in {clock}")


if __name__ == "__main__":
    run_stage(main)
