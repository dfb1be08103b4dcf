"""Stage ``external``: the networks of one dataset's folds read on every image of another (external validation).

Usage: ``python -m stages.external TRAIN TEST MODEL``, one stage per entry of
params ``external`` and network.  Reads params ``external``, ``evaluation``
(intervals, case scores) and how to run the networks (``finetune.batch_size``
and the prefix cache's settings).

Nothing learns from the TEST dataset, and nothing is fitted again: TRAIN's
trained study (:mod:`ultrasound_transfer.outputs.trained_study`) is read as
``finetune`` and ``evaluate`` left it.  Each split's network is rebuilt from
its recipe and fold file and run over every TEST image, giving its dense
head's probabilities and its feature layer; the split's own dense operating
point, SVM, Platt scaling and SVM operating point, as ``evaluate`` fitted
them (``classifiers.json``), read them.  The splits are then averaged into
one ensemble per classifier
(:mod:`ultrasound_transfer.evaluation.external_validation`).

Outputs in ``metrics/external/<train>-to-<test>/``:

* ``<model>.json`` (DVC metrics): ``image`` (and ``case``, where TEST's cases
  have several images and TRAIN has case operating points) headline figures
  of both classifiers on TEST, each read at the mean of the splits' operating
  points of its level, with
  intervals from a bootstrap over TEST's groups; ``gap``: per classifier the
  source's cross-validated figure, the external one and their difference with
  its interval; ``data``: TEST's counts; ``classifiers_sha256``: which
  fitted classifiers were read (a model card reports only its own);
* ``<model>.predictions.csv``: per TEST image its id, true class, group, case
  and per classifier the ensemble's probabilities, image and case thresholds,
  called class, and each split's probability of malignant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ultrasound_transfer.choices import CLASSIFIERS
from ultrasound_transfer.common import PipelineError, Stopwatch, log, parse_args, run_stage
from ultrasound_transfer.data.near_duplicates import near_pairs
from ultrasound_transfer.evaluation.cases import case_headline, has_multi_image_cases
from ultrasound_transfer.evaluation.classifiers import SplitReading
from ultrasound_transfer.evaluation.external_validation import (
    ensemble_predictions,
    split_by_split_gap,
    split_reading_pooled,
)
from ultrasound_transfer.evaluation.intervals import headline_with_intervals, interval_options
from ultrasound_transfer.networks.backbones import FEATURE_LAYERS, OUTPUT_LAYER
from ultrasound_transfer.networks.feature_extraction import layers_pass
from ultrasound_transfer.networks.heap import keep_freed_memory
from ultrasound_transfer.outputs import classifiers as classifiers_output
from ultrasound_transfer.outputs import cv_results, external_results, fold_networks
from ultrasound_transfer.outputs.classifiers import StudyClassifiers
from ultrasound_transfer.outputs.fold_networks import build_network, load_fold
from ultrasound_transfer.outputs.prepared import (
    Preprocessing,
    dataset_facts,
    load_fingerprints,
    load_manifest,
    load_prepared,
    load_preprocessing,
    load_report,
)
from ultrasound_transfer.outputs.provenance import file_sha256
from ultrasound_transfer.outputs.trained_study import load_trained_study
from ultrasound_transfer.outputs.training_record import NetworkRecipe
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.settings import Settings


def check_listed(settings: Settings, train: str, test: str) -> None:
    """Refuse a pair that params do not list, before anything of either dataset is read."""
    if (train, test) not in {(p.train, p.test) for p in settings.external}:
        raise PipelineError(f"{train} -> {test} is not an entry of params external; add "
                            f"{{train: {train}, test: {test}}} there.")


def check_classes(train: str, test: str, *, source_classes: list[str], target_classes: list[str]) -> None:
    """Refuse a pair whose datasets' classes differ, or are not two, before any network is built."""
    if len(source_classes) != 2:
        raise PipelineError(f"external {train} -> {test}: {train} has classes {source_classes}; external validation "
                            "reads two classes, benign and malignant (for BUSI, normalize.busi_classes: "
                            "[benign, malignant]).")
    if source_classes != target_classes:
        raise PipelineError(f"external {train} -> {test}: {train} has classes {source_classes} and {test} "
                            f"{target_classes}; the networks can only be read on a dataset of the same classes "
                            "(for BUSI, normalize.busi_classes: [benign, malignant]).")


def check_no_shared_images(train: str, test: str, *, source: pd.DataFrame, target: pd.DataFrame) -> None:
    """Refuse a pair whose datasets hold identical pixels: the networks would be tested on images they learned."""
    shared = target[target["sha256"].isin(set(source["sha256"]))]
    if len(shared):
        raise PipelineError(f"external {train} -> {test}: {len(shared)} image(s) of {test} have the pixels of an "
                            f"image of {train} (e.g. {shared['source'].iloc[0]}), so the networks would be tested on "
                            f"images they learned from; remove them from data/raw/{test} (re-hosted copies of one "
                            "set are common).")


def check_same_preprocessing(train: str, test: str, *, trained: Preprocessing, target: Preprocessing) -> None:
    """Refuse a target prepared otherwise than the networks' training images: they would read other squares."""
    if trained != target:
        raise PipelineError(f"external {train} -> {test}: {train}'s networks were trained on squares of "
                            f"{trained.image_size} px made by {trained.resize}, {test} is prepared as "
                            f"{target.image_size} px by {target.resize}; rerun the stages of both under one "
                            "image_size and normalize.resize (dvc repro).")


def check_no_near_copies(train: str, test: str, *, threshold_bits: int, source: pd.DataFrame,
                         target: pd.DataFrame) -> None:
    """Refuse a pair where an image of ``test`` is a near-copy of one of ``train`` (re-saved, re-compressed,
    cropped or annotated: the fingerprints of normalize, at its threshold), which identical pixels miss."""
    source_prints, target_prints = load_fingerprints(train), load_fingerprints(test)
    pairs, _ = near_pairs(np.concatenate([source_prints, target_prints]), threshold_bits)
    crossing = pairs[(pairs[:, 0] < len(source_prints)) & (pairs[:, 1] >= len(source_prints))]
    if len(crossing):
        i, j = crossing[0]
        raise PipelineError(f"external {train} -> {test}: {len(crossing)} image pair(s) of {test} and {train} are "
                            f"near-copies (fingerprints within {threshold_bits} bits), e.g. "
                            f"{target['source'].iloc[j - len(source_prints)]} and {source['source'].iloc[i]}, so the "
                            f"networks would be tested on images they learned from; remove them from data/raw/{test}.")


def read_splits(recipe: NetworkRecipe, fitted: StudyClassifiers, images: np.ndarray, *, settings: Settings,
                scratch_dir: Path, tag: str) -> dict[str, list[SplitReading]]:
    """Every split's network and classifiers, as kept, read on ``images``: per classifier, one reading per split."""
    cfg, clock = settings.finetune, Stopwatch()
    network = build_network(recipe)
    readings: dict[str, list[SplitReading]] = {name: [] for name in CLASSIFIERS}
    with layers_pass(network, images, layer_names=[FEATURE_LAYERS[fitted.feature_layer], OUTPUT_LAYER],
                     model_name=recipe.model, batch_size=cfg.batch_size, preprocessing=recipe.input_preprocessing,
                     cache=cfg.cache,
                     scratch_dir=scratch_dir) as outputs:
        log("external", f"{tag}: frozen prefix over {len(images)} images done ({clock})")
        for split in fitted.splits:
            load_fold(network, recipe, split.k)
            features, probabilities = outputs()
            readings["dense"].append(split.dense.read(probabilities))
            readings["svm"].append(split.svm.read(features))
            log("external", f"{tag} split {split.k}: read ({clock})")
    return readings


def main(argv: list[str]) -> None:
    train, test, model_name = parse_args(argv, ["train", "test", "model"], "python -m stages.external TRAIN TEST MODEL")
    keep_freed_memory()
    settings = load_settings()
    check_listed(settings, train, test)
    study = load_trained_study(train, model_name)
    recipe, fitted = study.recipe, study.classifiers
    class_names = list(recipe.class_names)
    target, source = load_prepared(test), load_manifest(train)
    check_classes(train, test, source_classes=class_names, target_classes=target.class_names)
    check_no_shared_images(train, test, source=source, target=target.manifest)
    check_no_near_copies(train, test, threshold_bits=load_report(train)["near_duplicate_threshold_bits"],
                         source=source, target=target.manifest)
    check_same_preprocessing(train, test, trained=recipe.preprocessing, target=load_preprocessing(test))
    internal_table = cv_results.load_predictions(train, model_name)
    tag = f"{train}->{test}/{model_name}"
    clock = Stopwatch()
    readings = read_splits(recipe, fitted, target.images, settings=settings,
                           scratch_dir=fold_networks.folder(train, model_name).parent, tag=tag)

    labels, groups = target.labels, target.manifest["group"].astype(str).to_numpy()
    ensemble = {name: ensemble_predictions(r, labels=labels, groups=groups) for name, r in readings.items()}
    table = pd.DataFrame({"id": target.manifest["id"], "repeat": 1, "true": labels,
                          "true_class": [class_names[c] for c in labels], "group": groups,
                          "case": target.manifest["case"].astype(str)})
    for name, pooled in ensemble.items():
        called = (pooled.probabilities[:, 1] >= pooled.thresholds).astype(int)
        cv_results.add_classifier_columns(table, name, probabilities=pooled.probabilities,
                                          thresholds=pooled.thresholds, called=called, class_names=class_names)
        table[cv_results.case_threshold_column(name)] = fitted.case_thresholds[name]
        for split, reading in zip(fitted.splits, readings[name]):
            table[external_results.split_column(name, split.k)] = reading.probabilities[:, 1]

    options = interval_options(settings.evaluation, seed=settings.seed)
    gap = {name: split_by_split_gap(
        cv_results.pooled_from_table(internal_table, name, class_names), internal_table["split"].to_numpy(),
        [split_reading_pooled(r, labels=labels, groups=groups) for r in readings[name]], **options)
        for name in CLASSIFIERS}
    metrics = {"train": train, "test": test, "data": dataset_facts(target.manifest, class_names),
               "image": headline_with_intervals(ensemble, **options)}
    case_level = has_multi_image_cases(table["case"].to_numpy())
    if case_level and np.isnan(list(fitted.case_thresholds.values())).any():
        log("external", f"{tag}: {train} has no case-level operating point (its cases have one image each, or "
            "its folds keep none together): no case-level figures")
        case_level = False
    if case_level:      # read at the mean of the splits' case operating points, as evaluate reads each split's
        by_case = {name: cv_results.pooled_from_table(table, name, class_names, level="case") for name in CLASSIFIERS}
        metrics["case"] = case_headline(by_case, cases=table["group"].to_numpy(),
                                        case_score=settings.evaluation.case_score, options=options)
    metrics |= {"gap": gap, "splits": len(fitted.splits), "operating_point": fitted.operating_point,
                "classifiers_sha256": file_sha256(classifiers_output.path(train, model_name))}
    external_results.write_results(train, test, model_name, metrics=metrics, predictions=table)
    external_results.write_plot_data(train, test, model_name, table, class_names=class_names,
                                     bins=settings.evaluation.calibration_bins)
    log("external", f"{tag}: ROC-AUC split by split " + ", ".join(
        f"{name} {gap[name]['internal_roc_auc']:.3f} internal -> {gap[name]['external_roc_auc']:.3f} external "
        f"(gap {gap[name]['external_minus_internal_roc_auc']:+.3f} "
        f"[{gap[name]['external_minus_internal_roc_auc_ci_low']:+.3f}, "
        f"{gap[name]['external_minus_internal_roc_auc_ci_high']:+.3f}])" for name in CLASSIFIERS) + f" ({clock})")


if __name__ == "__main__":
    run_stage(main)
