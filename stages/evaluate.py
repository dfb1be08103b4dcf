"""Stage ``evaluate``: SVM on the cached features, and scores of both classifiers.

Usage: ``python -m stages.evaluate DATASET MODEL``.  Reads params ``seed`` and
section ``svm``.

For each fold: StandardScaler + linear SVM (scikit-learn ``LinearSVC``) fitted
on the features of the images the dense head was fitted on (``svm.train_on:
fit``, from ``finetune``'s ``fold_parts.csv``), so both classifiers learn from
the same labelled images; ``svm.train_on: training`` adds the dense head's
early-stopping images.  When ``svm.C_grid`` is non-empty, C is chosen by a
grouped, stratified inner cross-validation on those images only; otherwise
``svm.C`` is used.  The dense head's scores come from ``finetune``'s
test-fold predictions.  Metric names: :mod:`ultrasound_transfer.evaluation.scoring`.

Outputs in ``metrics/cv/<dataset>/``:

* ``<model>.json`` (DVC metrics): mean and std over folds per classifier,
  keys ``dense.accuracy``, ``svm.sensitivity_std``, ...; ``svm_train_on``; and the freezing facts;
* ``<model>.folds.csv``: every metric per fold and classifier, the images each
  classifier was trained on (``n_train``) and tested on, and the C used;
* ``<model>.predictions.csv``: per test image: id, fold, true class, and per
  classifier the predicted class and its scores.

and, for ``dvc plots``, ``metrics/plots/confusion/<dataset>/<model>.<classifier>.csv``
(actual, predicted) and ``metrics/plots/roc/<dataset>/<model>.csv`` (the ROC
curve of each classifier over the pooled test folds; micro-averaged one-vs-rest
for more than two classes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ultrasound_transfer.common import (
    PipelineError,
    Stopwatch,
    log,
    parse_args,
    read_json,
    run_stage,
    write_atomic,
    write_json,
)
from ultrasound_transfer.data.prepared import class_names_of, load_fold_groups, load_manifest, load_test_folds
from ultrasound_transfer.evaluation.scoring import classification_metrics, roc_points, summarize_folds
from ultrasound_transfer.evaluation.svm import fit_svm, per_class_scores
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.paths import FEATURES_DIR, METRICS_DIR, MODELS_DIR, PLOTS_DIR


def check_class_names(class_names: list[str]) -> list[str]:
    """Two classes must be benign and malignant: malignant (label 1) is the positive class of every metric."""
    if len(class_names) == 2 and class_names != ["benign", "malignant"]:
        raise PipelineError(
            f"two classes {class_names}: the metrics take 'malignant' as the positive class, so the labels "
            "must be 'benign' and 'malignant' (rename them in the dataset's labels)."
        )
    return class_names


def load_fold_features(dataset: str, model: str, k: int, ids: np.ndarray) -> np.ndarray:
    """Features of fold k, checked to be in manifest order."""
    path = FEATURES_DIR / dataset / model / f"fold{k}.npz"
    if not path.exists():
        raise PipelineError(f"{path} is missing; run 'dvc repro features@{dataset}-{model}'.")
    with np.load(path, allow_pickle=True) as stored:
        if not np.array_equal(stored["ids"], ids):
            raise PipelineError(f"{path} is not in the order of the manifest; rerun the features stage.")
        return stored["features"]


SCORE_PREFIX = {"dense": "dense_prob_", "svm": "svm_score_"}


def write_plot_data(dataset: str, model: str, predictions: pd.DataFrame, class_names: list[str]) -> None:
    """Confusion and ROC data of both classifiers, in the forms ``dvc plots`` draws."""
    curves = []
    for classifier in ("dense", "svm"):
        confusion = pd.DataFrame({"actual": predictions["true_class"], "predicted": predictions[f"{classifier}_class"]})
        write_atomic(PLOTS_DIR / "confusion" / dataset / f"{model}.{classifier}.csv",
                     lambda tmp, table=confusion: table.to_csv(tmp, index=False))
        score_columns = [f"{SCORE_PREFIX[classifier]}{name}" for name in class_names]
        curves.append(roc_points(predictions["true"].to_numpy(), predictions[score_columns].to_numpy(), classifier))
    roc = pd.concat(curves, ignore_index=True)
    write_atomic(PLOTS_DIR / "roc" / dataset / f"{model}.csv", lambda tmp: roc.to_csv(tmp, index=False))


def svm_training_rows(parts: pd.DataFrame, fold: int, ids: np.ndarray, train_on: str) -> np.ndarray:
    """Positions (in manifest order) of the images the SVM of ``fold`` learns from.

    ``fit``: exactly the images the dense head was fitted on, so both
    classifiers learn from the same labelled images; ``training``: the whole
    training part, the dense head's early-stopping images included.
    """
    wanted = ("fit",) if train_on == "fit" else ("fit", "validation")
    chosen = set(parts.loc[(parts["fold"] == fold) & parts["part"].isin(wanted), "id"])
    return np.flatnonzero(np.isin(ids, list(chosen)))


def main(argv: list[str]) -> None:
    dataset, model_name = parse_args(argv, ["dataset", "model"], "python -m stages.evaluate DATASET MODEL")
    settings = load_settings()
    seed, svm_cfg = settings.seed, settings.svm
    manifest = load_manifest(dataset)
    labels, ids, groups = manifest["label"].to_numpy(), manifest["id"].to_numpy(), load_fold_groups(dataset)
    class_names = check_class_names(class_names_of(manifest))
    n_classes = len(class_names)
    folds = load_test_folds(dataset, len(manifest))
    training_dir = MODELS_DIR / dataset / model_name / "training"
    dense = pd.read_csv(training_dir / "dense_predictions.csv")
    parts = pd.read_csv(training_dir / "fold_parts.csv")
    prob_columns = [f"prob_{name}" for name in class_names]
    freezing = read_json(training_dir / "freezing.json")["folds"][0]
    tag = f"{dataset}/{model_name}"
    clock = Stopwatch()

    fold_rows, prediction_tables = [], []
    for k, test in enumerate(folds, start=1):
        train = svm_training_rows(parts, k, ids, svm_cfg.train_on)
        dense_train = svm_training_rows(parts, k, ids, "fit")
        if np.intersect1d(train, test).size:
            raise PipelineError(f"{training_dir / 'fold_parts.csv'} puts test images of fold {k} in its training "
                                f"part; it does not match {dataset}'s folds: rerun "
                                f"'dvc repro finetune@{dataset}-{model_name}'.")
        features = load_fold_features(dataset, model_name, k, ids)
        svm = fit_svm(features[train], labels[train], groups[train], svm=svm_cfg, seed=seed)
        svm_scores = per_class_scores(svm, features[test], n_classes)
        svm_pred = svm_scores.argmax(axis=1)
        fold_dense = dense[dense["fold"] == k].set_index("id").loc[ids[test]]
        dense_probs = fold_dense[prob_columns].to_numpy()
        dense_pred = dense_probs.argmax(axis=1)
        C = float(svm.named_steps["linearsvc"].C)
        for name, pred, scores, n_train in (("dense", dense_pred, dense_probs, len(dense_train)),
                                            ("svm", svm_pred, svm_scores, len(train))):
            fold_rows.append({"classifier": name, "fold": k, "n_train": n_train, "n_test": len(test),
                              **classification_metrics(labels[test], pred, scores, class_names),
                              "svm_C": C if name == "svm" else np.nan})
        table = pd.DataFrame({"id": ids[test], "fold": k, "true": labels[test],
                              "true_class": [class_names[c] for c in labels[test]],
                              "dense_pred": dense_pred, "dense_class": [class_names[c] for c in dense_pred],
                              "svm_pred": svm_pred, "svm_class": [class_names[c] for c in svm_pred]})
        for c, name in enumerate(class_names):
            table[f"{SCORE_PREFIX['dense']}{name}"] = dense_probs[:, c]
            table[f"{SCORE_PREFIX['svm']}{name}"] = svm_scores[:, c]
        prediction_tables.append(table)
        accuracies = {r["classifier"]: r["accuracy"] for r in fold_rows[-2:]}
        log("evaluate", f"{tag} fold {k}/{len(folds)}: accuracy dense {accuracies['dense']:.3f}, "
            f"svm {accuracies['svm']:.3f} (C={C:g}); trained on {len(dense_train)} and {len(train)} images ({clock})")

    per_fold = pd.DataFrame(fold_rows)
    metrics = {
        name: summarize_folds(per_fold[per_fold["classifier"] == name]
                              .drop(columns=["classifier", "fold", "svm_C", "n_test"]).to_dict("records"))
        for name in ("dense", "svm")
    }
    metrics["svm_train_on"] = svm_cfg.train_on
    metrics["layers_total"] = freezing["total_layers"]
    metrics["layers_trained"] = freezing["trained_layers"]
    metrics["trainable_params"] = freezing["trainable_params"]
    out = METRICS_DIR / dataset
    write_atomic(out / f"{model_name}.folds.csv", lambda tmp: per_fold.to_csv(tmp, index=False))
    predictions = pd.concat(prediction_tables, ignore_index=True)
    write_atomic(out / f"{model_name}.predictions.csv", lambda tmp: predictions.to_csv(tmp, index=False))
    write_plot_data(dataset, model_name, predictions, class_names)
    write_json(out / f"{model_name}.json", metrics)
    dense, svm = metrics["dense"], metrics["svm"]
    log("evaluate", f"{tag}: accuracy dense {dense['accuracy']:.3f} ± {dense['accuracy_std']:.3f}, "
        f"svm {svm['accuracy']:.3f} ± {svm['accuracy_std']:.3f}")


if __name__ == "__main__":
    run_stage(main)
