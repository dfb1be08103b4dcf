"""Stage ``evaluate``: the SVM on the cached features, both classifiers read at their operating points, and scored.

Usage: ``python -m stages.evaluate DATASET MODEL``.  Reads params ``seed``,
``features.layer`` (which of ``finetune``'s feature layers the SVM reads) and
sections ``svm`` and ``evaluation``.

For each split (each fold of each repeat): StandardScaler + linear SVM
(scikit-learn ``LinearSVC``) fitted on the features of the images the dense
head was fitted on (``svm.train_on: fit``, from ``finetune``'s
``fold_parts.csv``), so both classifiers learn from the same labelled images;
``svm.train_on: training`` adds the dense head's early-stopping images.  C is
chosen by a grouped inner cross-validation on those images only
(:mod:`ultrasound_transfer.evaluation.svm`).  Both classifiers then get a
probability of malignant and a threshold chosen on the split's inner
validation images (the SVM's by Platt scaling on images it did not learn
from), never its test images (:mod:`ultrasound_transfer.evaluation.classifiers`).

Outputs in ``metrics/cv/<dataset>/``:

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

import numpy as np
import pandas as pd

from ultrasound_transfer.common import PipelineError, Stopwatch, log, parse_args, run_stage, write_atomic, write_json
from ultrasound_transfer.data.prepared import (
    check_class_names,
    class_names_of,
    dataset_facts,
    load_fold_groups,
    load_manifest,
    load_split_names,
    load_test_folds,
)
from ultrasound_transfer.evaluation.calibration import reliability_table
from ultrasound_transfer.evaluation.cases import case_headline, cases_straddle_folds, has_multi_image_cases
from ultrasound_transfer.evaluation.classifiers import SplitReading, read_dense, read_svm, split_metrics
from ultrasound_transfer.evaluation.fold_outputs import (
    dense_probabilities,
    load_fold_features,
    load_training_record,
    part_rows,
    svm_training_rows,
)
from ultrasound_transfer.evaluation.intervals import headline_with_intervals, interval_options, pooled_from_table
from ultrasound_transfer.evaluation.scoring import roc_points, summarize_folds
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.paths import METRICS_DIR, PLOTS_DIR
from ultrasound_transfer.settings import Settings

CLASSIFIERS = ("dense", "svm")


def reading_columns(table: pd.DataFrame, name: str, reading: SplitReading, class_names: list[str]) -> None:
    """Add one classifier's columns for one split's test images to a predictions table."""
    for c, class_name in enumerate(class_names):
        table[f"{name}_prob_{class_name}"] = reading.probabilities[:, c]
    table[f"{name}_threshold"] = reading.threshold
    table[f"{name}_class"] = [class_names[c] for c in reading.called]
    table[f"{name}_argmax_class"] = [class_names[c] for c in reading.argmax]


def headline(predictions: pd.DataFrame, manifest: pd.DataFrame, class_names: list[str], settings: Settings) -> dict:
    """``image`` and, where the manifest's cases have several images, ``case`` headline figures with intervals."""
    pooled = {name: pooled_from_table(predictions, name, class_names) for name in CLASSIFIERS}
    options = interval_options(settings.evaluation, seed=settings.seed)
    result = {"image": headline_with_intervals(pooled, **options)}
    cases = predictions["case"].astype(str).to_numpy()
    if len(class_names) == 2 and has_multi_image_cases(manifest["case"].astype(str).to_numpy()):
        if cases_straddle_folds(cases, predictions["split"].to_numpy(), predictions["repeat"].to_numpy()):
            log("evaluate", "cases straddle test folds (cv.grouping = none): no case-level figures")
        else:
            result["case"] = case_headline(pooled, cases=cases, case_score=settings.evaluation.case_score,
                                           options=options)
    return result


def write_plot_data(dataset: str, model: str, predictions: pd.DataFrame, class_names: list[str],
                    bins: int) -> None:
    """Confusion, ROC and reliability data of both classifiers, in the forms ``dvc plots`` draws."""
    curves, reliability = [], []
    for classifier in CLASSIFIERS:
        confusion = pd.DataFrame({"actual": predictions["true_class"], "predicted": predictions[f"{classifier}_class"]})
        write_atomic(PLOTS_DIR / "confusion" / dataset / f"{model}.{classifier}.csv",
                     lambda tmp, table=confusion: table.to_csv(tmp, index=False))
        score_columns = [f"{classifier}_prob_{name}" for name in class_names]
        curves.append(roc_points(predictions["true"].to_numpy(), predictions[score_columns].to_numpy(), classifier))
        if len(class_names) == 2:
            table = reliability_table(predictions["true"].to_numpy(),
                                      predictions[f"{classifier}_prob_malignant"].to_numpy(), bins)
            reliability.append(table.assign(series=classifier))
    roc = pd.concat(curves, ignore_index=True)
    write_atomic(PLOTS_DIR / "roc" / dataset / f"{model}.csv", lambda tmp: roc.to_csv(tmp, index=False))
    diagram = (pd.concat(reliability, ignore_index=True) if reliability else
               pd.DataFrame(columns=["bin_low", "bin_high", "mean_predicted", "observed_fraction", "count", "series"]))
    write_atomic(PLOTS_DIR / "calibration" / dataset / f"{model}.csv", lambda tmp: diagram.to_csv(tmp, index=False))


def main(argv: list[str]) -> None:
    dataset, model_name = parse_args(argv, ["dataset", "model"], "python -m stages.evaluate DATASET MODEL")
    settings = load_settings()
    seed, svm_cfg = settings.seed, settings.svm
    manifest = load_manifest(dataset)
    labels, ids, groups = manifest["label"].to_numpy(), manifest["id"].to_numpy(), load_fold_groups(dataset)
    class_names = check_class_names(class_names_of(manifest))
    folds, names = load_test_folds(dataset, len(manifest)), load_split_names(dataset)
    record = load_training_record(dataset, model_name)
    dense, parts, freezing = record.dense, record.parts, record.freezing
    prob_columns = [f"prob_{name}" for name in class_names]
    tag = f"{dataset}/{model_name}"
    clock = Stopwatch()

    fold_rows, prediction_tables, C_on_edge = [], [], 0
    for k, (test, (repeat, fold)) in enumerate(zip(folds, names), start=1):
        train = svm_training_rows(parts, k, ids, svm_cfg.train_on)
        fit, validation = part_rows(parts, k, ids, "fit"), part_rows(parts, k, ids, "validation")
        if np.intersect1d(train, test).size or np.intersect1d(validation, test).size:
            raise PipelineError(f"{record.folder / 'fold_parts.csv'} puts test images of split {k} in its training "
                                f"part; it does not match {dataset}'s folds: rerun "
                                f"'dvc repro finetune@{dataset}-{model_name}'.")
        readings = {
            "dense": read_dense(dense_probabilities(dense, k, "test", ids[test], prob_columns),
                                validation_labels=labels[validation],
                                validation_probabilities=dense_probabilities(dense, k, "validation", ids[validation],
                                                                             prob_columns),
                                n_train=len(fit), evaluation=settings.evaluation),
            "svm": read_svm(load_fold_features(dataset, model_name, k, ids=ids, layer=settings.feature_layer),
                            labels, groups, train=train, test=test,
                            validation=validation, svm=svm_cfg, evaluation=settings.evaluation, seed=seed),
        }
        table = pd.DataFrame({"id": ids[test], "repeat": repeat, "fold": fold, "split": k, "true": labels[test],
                              "true_class": [class_names[c] for c in labels[test]],
                              "group": manifest["group"].to_numpy()[test], "case": manifest["case"].to_numpy()[test]})
        for name, reading in readings.items():
            reading_columns(table, name, reading, class_names)
            fold_rows.append({"classifier": name, "repeat": repeat, "fold": fold, "split": k,
                              "n_train": reading.n_train, "n_test": len(test),
                              **split_metrics(labels[test], reading, class_names), "svm_C": reading.C})
        prediction_tables.append(table)
        C = readings["svm"].C
        if svm_cfg.C_grid and C in (min(svm_cfg.C_grid), max(svm_cfg.C_grid)):
            C_on_edge += 1
            log("evaluate", f"{tag} repeat {repeat} fold {fold}: the SVM's C = {C:g} is on the edge of svm.C_grid; "
                "the best C may lie beyond it (widen the grid)")
        aucs = {r["classifier"]: r["roc_auc"] for r in fold_rows[-2:]}
        log("evaluate", f"{tag} repeat {repeat} fold {fold}: ROC-AUC dense {aucs['dense']:.3f}, svm {aucs['svm']:.3f} "
            f"(C={C:g}); trained on {readings['dense'].n_train} and {readings['svm'].n_train} images ({clock})")

    per_fold = pd.DataFrame(fold_rows)
    predictions = pd.concat(prediction_tables, ignore_index=True)
    per_split_metrics = [c for c in per_fold.columns
                         if c not in ("classifier", "repeat", "fold", "split", "n_test", "svm_C")]
    metrics = {
        "data": dataset_facts(manifest, class_names),
        **headline(predictions, manifest, class_names, settings),
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
    out = METRICS_DIR / dataset
    write_atomic(out / f"{model_name}.folds.csv", lambda tmp: per_fold.to_csv(tmp, index=False))
    write_atomic(out / f"{model_name}.predictions.csv", lambda tmp: predictions.to_csv(tmp, index=False))
    write_plot_data(dataset, model_name, predictions, class_names, settings.evaluation.calibration_bins)
    write_json(out / f"{model_name}.json", metrics)
    image = metrics["image"]
    log("evaluate", f"{tag}: pooled ROC-AUC dense {image['dense']['roc_auc']:.3f} "
        f"[{image['dense']['roc_auc_ci_low']:.3f}, {image['dense']['roc_auc_ci_high']:.3f}], "
        f"svm {image['svm']['roc_auc']:.3f} [{image['svm']['roc_auc_ci_low']:.3f}, "
        f"{image['svm']['roc_auc_ci_high']:.3f}] ({clock})")


if __name__ == "__main__":
    run_stage(main)
