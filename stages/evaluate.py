"""Stage ``evaluate``: the SVM on the cached features, both classifiers read at their operating points, and scored.

Usage: ``python -m stages.evaluate DATASET MODEL``.  Reads params ``seed``,
``features.layer`` (which of ``finetune``'s feature layers the SVM reads) and
sections ``svm`` and ``evaluation``.

For each split (each fold of each repeat): StandardScaler + linear SVM
(scikit-learn ``LinearSVC``) fitted on the features of the images the dense
head was fitted on (``svm.train_on: fit``, from ``finetune``'s
``fold_parts.csv``), so both classifiers learn from the same labelled images;
``svm.train_on: training`` adds the dense head's early-stopping images.  C is
chosen on the split's inner validation images (``svm.C_selection:
validation``) or by a grouped inner cross-validation on the training images
(``inner``) (:mod:`ultrasound_transfer.evaluation.svm`).  Both classifiers
then get a probability of malignant (the dense head's log-odds and the SVM's
decision value, each Platt-scaled on images it did not learn from) and image
and case thresholds chosen on the split's inner validation images, never its
test images (:mod:`ultrasound_transfer.evaluation.classifiers`).

Everything fitted here is kept: ``models/<dataset>/<model>/classifiers.json``
holds each split's SVM (C, standardization, weights), its Platt scaling, both
operating points and the novelty reference
(:mod:`ultrasound_transfer.outputs.classifiers`), beside the SHA-256 of the
fold networks' recipe; ``external``, ``predict``, ``explain`` and ``export``
apply these objects and never fit them again.

Figures in ``metrics/cv/<dataset>/`` (:mod:`ultrasound_transfer.outputs.cv_results`):

* ``<model>.json`` (DVC metrics): under ``image`` (and ``case``, where cases
  have several images) each classifier's headline figures on the pooled
  out-of-fold predictions with 95 % intervals from a bootstrap over groups
  (:mod:`ultrasound_transfer.evaluation.intervals`), and ``svm_minus_dense``;
  under ``folds`` the mean and std over splits of every per-split metric (the
  paper's reading: ``argmax_accuracy``...); and the operating-point rule, the
  repeats, and the freezing facts (``trained_share``: of the backbone's parameters);
* ``<model>.folds.csv``: every metric per split and classifier, with
  ``repeat``, ``fold``, ``split``, the images each classifier learned from
  (``n_train``) and was tested on, its threshold and the SVM's C;
* ``<model>.predictions.csv``: per test image and split: id, repeat, fold,
  true class, group, case, and per classifier its probabilities, threshold,
  the class called at the operating point and the argmax class.

and, for ``dvc plots``, ``metrics/plots/confusion/<dataset>/<model>.<classifier>.csv``
(actual, predicted at the operating point), ``metrics/plots/roc/<dataset>/<model>.csv``
(the ROC curve of each classifier over the pooled test folds; micro-averaged
one-vs-rest for more than two classes) and
``metrics/plots/calibration/<dataset>/<model>.csv`` (the reliability diagram).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from ultrasound_transfer.choices import CLASSIFIERS
from ultrasound_transfer.common import PipelineError, Stopwatch, load_params, log, parse_args, run_stage
from ultrasound_transfer.evaluation.cases import case_headline, has_multi_image_cases
from ultrasound_transfer.evaluation.classifiers import (
    FittedDense,
    SplitClassifiers,
    SplitReading,
    fit_dense_reading,
    fit_svm_reading,
    split_metrics,
)
from ultrasound_transfer.evaluation.intervals import headline_with_intervals, interval_options
from ultrasound_transfer.evaluation.novelty import fit_novelty, novelty_threshold
from ultrasound_transfer.evaluation.scoring import summarize_folds
from ultrasound_transfer.outputs import classifiers as classifiers_output
from ultrasound_transfer.outputs import cv_results, training_record
from ultrasound_transfer.outputs.classifiers import StudyClassifiers, write_classifiers
from ultrasound_transfer.outputs.features import load_fold_features
from ultrasound_transfer.outputs.folds import load_fold_groups, load_split_names, load_test_folds
from ultrasound_transfer.outputs.folds import load_record as load_folds_record
from ultrasound_transfer.outputs.prepared import check_class_names, class_names_of, dataset_facts, load_manifest
from ultrasound_transfer.outputs.provenance import code_revision
from ultrasound_transfer.outputs.training_record import (
    NetworkRecipe,
    TrainingRecord,
    dense_probabilities,
    load_recipe,
    load_record,
    part_rows,
    svm_training_rows,
)
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.settings import Settings

# The parameters evaluate runs under (dvc.yaml's params of the stage), recorded with the classifiers.
RECORDED_PARAMS = ("seed", "features", "svm", "evaluation")


def case_units(dataset: str, manifest: pd.DataFrame) -> np.ndarray | None:
    """The unit of the case level, per image: its case joined with what the folds kept with it (its fold group:
    identical copies under ``cv.grouping: exact``, near-copies too under ``near``), so that a unit lies in one
    test fold and is counted once.  None where every case has one image (case level is image level) or where the
    folds keep nothing together (``none``: a case's images may lie in several test folds)."""
    if not has_multi_image_cases(manifest["case"].astype(str).to_numpy()):
        return None
    grouping = load_folds_record(dataset)["grouping"]
    if grouping == "none":
        log("evaluate", f"{dataset}: cv.grouping = none lets a case's images fall in several test folds; "
            "no case-level figures")
        return None
    return load_fold_groups(dataset)


def headline(predictions: pd.DataFrame, class_names: list[str], settings: Settings, *,
             units: np.ndarray | None) -> dict:
    """``image`` and, where ``units`` gives each prediction row's case unit (:func:`case_units`), ``case``
    headline figures with intervals."""
    pooled = {name: cv_results.pooled_from_table(predictions, name, class_names) for name in CLASSIFIERS}
    options = interval_options(settings.evaluation, seed=settings.seed)
    result = {"image": headline_with_intervals(pooled, **options)}
    raw_dense_name = cv_results.RAW_DENSE
    if cv_results.prob_column(raw_dense_name, class_names[-1]) in predictions:     # beside, labelled, not compared
        raw = cv_results.pooled_from_table(predictions, raw_dense_name, class_names)
        result["image"] |= headline_with_intervals({raw_dense_name: raw}, **options)
    if units is not None and len(class_names) == 2:
        by_case = {name: cv_results.pooled_from_table(predictions, name, class_names, level="case")
                   for name in CLASSIFIERS}
        result["case"] = case_headline(by_case, cases=units, case_score=settings.evaluation.case_score,
                                       options=options)
    return result


def fit_split(k: int, features: np.ndarray, record: TrainingRecord, *, labels: np.ndarray, groups: np.ndarray,
              ids: np.ndarray, test: np.ndarray, class_names: list[str], settings: Settings,
              units: np.ndarray | None) -> SplitClassifiers:
    """Everything split ``k`` fits beside its network, on its training part only: the dense head's calibration
    and operating point and the SVM (on the validation images; at case level too, where ``units`` gives each
    image's case unit), and the novelty reference (the SVM's training images, scaled by its test images, which
    no choice of a class reads)."""
    train = svm_training_rows(record.parts, k, ids, settings.svm.train_on)
    fit, validation = part_rows(record.parts, k, ids, "fit"), part_rows(record.parts, k, ids, "validation")
    if np.intersect1d(train, test).size or np.intersect1d(validation, test).size:
        raise PipelineError(f"{record.folder / training_record.FOLD_PARTS} puts test images of split {k} in its "
                            f"training part; it does not match the folds: rerun "
                            f"'dvc repro {training_record.stage(record.dataset, record.model)}'.")
    dense_validation = dense_probabilities(record, k, "validation", ids[validation], class_names)
    dense = fit_dense_reading(labels[validation], dense_validation, n_train=len(fit), evaluation=settings.evaluation,
                              validation_cases=None if units is None else units[validation])
    svm = fit_svm_reading(features, labels, groups, train=train, validation=validation, svm=settings.svm,
                          evaluation=settings.evaluation, seed=settings.seed, cases=units)
    return SplitClassifiers(k, dense, svm, fit_novelty(features[train], features[test]))


def run_facts(recipe: NetworkRecipe, settings: Settings, *, n_classes: int) -> dict:
    """What the run is, for a reader of the figures: the network's recipe (initial weights, input, strategy,
    epochs, backend) and how the classifiers were fitted (as applied: more than two classes are read by argmax,
    neither calibrated nor thresholded)."""
    return {"weights": recipe.weights, "image_size": recipe.preprocessing.image_size,
            "resize": recipe.preprocessing.resize, "ft_fraction": recipe.ft_fraction,
            "epochs": recipe.provenance.get("params", {}).get("finetune", {}).get("epochs"),
            "backend": recipe.backend,
            "dense_calibration": settings.evaluation.dense_calibration if n_classes == 2 else "argmax",
            "svm_C_selection": settings.svm.C_selection if settings.svm.C_grid else "fixed"}


def raw_dense(record: TrainingRecord, k: int, *, labels: np.ndarray, ids: np.ndarray, class_names: list[str],
              settings: Settings) -> FittedDense:
    """Split ``k``'s dense head as the paper reads it: the raw softmax, its threshold chosen on the same
    validation images by the same rule."""
    validation = part_rows(record.parts, k, ids, "validation")
    return fit_dense_reading(labels[validation], dense_probabilities(record, k, "validation", ids[validation],
                                                                     class_names),
                             n_train=len(part_rows(record.parts, k, ids, "fit")),
                             evaluation=replace(settings.evaluation, dense_calibration="none"))


def main(argv: list[str]) -> None:
    dataset, model_name = parse_args(argv, ["dataset", "model"], "python -m stages.evaluate DATASET MODEL")
    settings = load_settings()
    svm_cfg = settings.svm
    manifest = load_manifest(dataset)
    labels, ids, groups = manifest["label"].to_numpy(), manifest["id"].to_numpy(), load_fold_groups(dataset)
    class_names = check_class_names(class_names_of(manifest))
    folds, names = load_test_folds(dataset, len(manifest)), load_split_names(dataset)
    record = load_record(dataset, model_name)
    tag = f"{dataset}/{model_name}"
    clock = Stopwatch()
    units = case_units(dataset, manifest) if len(class_names) == 2 else None

    fold_rows, prediction_tables, fitted, held_out, C_on_edge = [], [], [], [], 0
    for k, (test, (repeat, fold)) in enumerate(zip(folds, names), start=1):
        features = load_fold_features(dataset, model_name, k, ids=ids, layer=settings.feature_layer)
        split = fit_split(k, features, record, labels=labels, groups=groups, ids=ids, test=test,
                          class_names=class_names, settings=settings, units=units)
        fitted.append(split)
        held_out.append(split.novelty.novelty(features[test]))
        softmax = dense_probabilities(record, k, "test", ids[test], class_names)
        readings: dict[str, SplitReading] = {"dense": split.dense.read(softmax), "svm": split.svm.read(features[test])}
        table = pd.DataFrame({"id": ids[test], "repeat": repeat, "fold": fold, "split": k, "true": labels[test],
                              "true_class": [class_names[c] for c in labels[test]],
                              "group": manifest["group"].to_numpy()[test], "case": manifest["case"].to_numpy()[test]})
        case_thresholds = {"dense": split.dense.case_threshold, "svm": split.svm.case_threshold}
        for name, reading in readings.items():
            cv_results.add_classifier_columns(table, name, probabilities=reading.probabilities,
                                              thresholds=reading.threshold, called=reading.called,
                                              argmax=reading.argmax, class_names=class_names)
            table[cv_results.case_threshold_column(name)] = case_thresholds[name]
            fold_rows.append({"classifier": name, "repeat": repeat, "fold": fold, "split": k,
                              "n_train": reading.n_train, "n_test": len(test),
                              **split_metrics(labels[test], reading, class_names), "svm_C": reading.C})
        if split.dense.platt is not None:
            raw = raw_dense(record, k, labels=labels, ids=ids, class_names=class_names, settings=settings)
            cv_results.add_classifier_columns(table, cv_results.RAW_DENSE, probabilities=softmax,
                                              thresholds=raw.threshold, called=raw.read(softmax).called,
                                              class_names=class_names)
        prediction_tables.append(table)
        C = readings["svm"].C
        if svm_cfg.C_grid and C in (min(svm_cfg.C_grid), max(svm_cfg.C_grid)):
            C_on_edge += 1
            log("evaluate", f"{tag} repeat {repeat} fold {fold}: the SVM's C = {C:g} is on the edge of svm.C_grid; "
                "the best C may lie beyond it (widen the grid)")
        aucs = {r["classifier"]: r["roc_auc"] for r in fold_rows[-2:]}
        log("evaluate", f"{tag} repeat {repeat} fold {fold}: ROC-AUC dense {aucs['dense']:.3f}, svm {aucs['svm']:.3f} "
            f"(C={C:g}); trained on {readings['dense'].n_train} and {readings['svm'].n_train} images ({clock})")

    params = load_params()
    write_classifiers(dataset, model_name, StudyClassifiers(
        splits=tuple(fitted), feature_layer=settings.feature_layer,
        operating_point=settings.evaluation.operating_point, target=settings.evaluation.target,
        novelty_threshold=novelty_threshold(np.concatenate(held_out)),
        recipe_sha256=training_record.recipe_sha256(dataset, model_name),
        provenance={"params": {key: params[key] for key in RECORDED_PARAMS}, "code_revision": code_revision()}))
    per_fold = pd.DataFrame(fold_rows)
    predictions = pd.concat(prediction_tables, ignore_index=True)
    per_split_metrics = [c for c in per_fold.columns
                         if c not in ("classifier", "repeat", "fold", "split", "n_test", "svm_C")]
    freezing = record.freezing
    metrics = {
        "run": run_facts(load_recipe(dataset, model_name), settings, n_classes=len(class_names)),
        "data": dataset_facts(manifest, class_names),
        **headline(predictions, class_names, settings,
                   units=None if units is None else units[np.concatenate(folds)]),
        "folds": {name: summarize_folds(per_fold.loc[per_fold["classifier"] == name, per_split_metrics]
                                        .to_dict("records")) for name in CLASSIFIERS},
        "operating_point": settings.evaluation.operating_point,
        "repeats": int(predictions["repeat"].nunique()),
        "splits": len(folds),
        "svm_train_on": svm_cfg.train_on,
        "svm_C_on_grid_edge": C_on_edge,
        "layers_total": freezing["total_layers"],
        "layers_trained": freezing["trained_layers"],
        "trainable_params": freezing["trainable_params"],
        "trained_share": freezing.get("trained_share", float("nan")),
    }
    cv_results.write_results(dataset, model_name, metrics=metrics, split_metrics=per_fold, predictions=predictions)
    cv_results.write_plot_data(dataset, model_name, predictions, class_names=class_names,
                               bins=settings.evaluation.calibration_bins)
    image = metrics["image"]
    log("evaluate", f"{tag}: pooled ROC-AUC dense {image['dense']['roc_auc']:.3f} "
        f"[{image['dense']['roc_auc_ci_low']:.3f}, {image['dense']['roc_auc_ci_high']:.3f}], "
        f"svm {image['svm']['roc_auc']:.3f} [{image['svm']['roc_auc_ci_low']:.3f}, "
        f"{image['svm']['roc_auc_ci_high']:.3f}]; classifiers in {classifiers_output.path(dataset, model_name)} "
        f"({clock})")


if __name__ == "__main__":
    run_stage(main)
