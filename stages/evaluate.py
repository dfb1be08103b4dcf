"""Stage ``evaluate``: SVM on the cached features, and scores of both classifiers.

Usage: ``python -m stages.evaluate DATASET MODEL``.  Reads params ``seed`` and
section ``svm``.

For each fold: StandardScaler + linear SVM (scikit-learn ``LinearSVC``) fitted
on the fold's training features and scored on its test fold.  When
``svm.C_grid`` is non-empty, C is chosen by a grouped, stratified inner
cross-validation on the training part only; otherwise ``svm.C`` is used.  The
dense head's scores come from ``finetune``'s test-fold predictions.

Outputs in ``metrics/cv/<dataset>/``:

* ``<model>.json`` (DVC metrics): mean and std over folds per classifier,
  keys ``dense.accuracy``, ``svm.accuracy_std``, ...; and the freezing facts;
* ``<model>.folds.csv``: every metric per fold and classifier, and the C used;
* ``<model>.predictions.csv``: per test image, both classifiers' predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from stages.common import (
    PipelineError, Stopwatch, check_range, load_params, log, parse_args, read_json, require, run_stage, write_atomic,
    write_json,
)
from stages.data import (
    FEATURES_DIR, METRICS_DIR, MODELS_DIR, load_fold_groups, load_manifest, load_test_folds, train_indices,
)
from stages.grouping import fewest_groups_per_class
from stages.scoring import classification_metrics, summarize_folds


def linear_svm(C: float, seed: int) -> Pipeline:
    """Standardize features, then a linear SVM (squared hinge, liblinear)."""
    return make_pipeline(StandardScaler(), LinearSVC(C=C, max_iter=20_000, random_state=seed))


def fit_svm(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, svm_cfg: dict, seed: int) -> Pipeline:
    """Fit the SVM on one training part, tuning C by inner grouped CV if asked."""
    grid = list(svm_cfg.get("C_grid") or [])
    if not grid:
        return linear_svm(svm_cfg["C"], seed).fit(features, labels)
    inner = svm_cfg["inner_folds"]
    _, fewest = fewest_groups_per_class(labels, groups)
    if fewest < inner:
        raise PipelineError(
            f"svm.inner_folds = {inner} but a class has only {fewest} groups in a training part; "
            "lower svm.inner_folds, or set svm.C_grid to [] to use the fixed svm.C."
        )
    search = GridSearchCV(
        linear_svm(svm_cfg["C"], seed),
        {"linearsvc__C": grid},
        cv=StratifiedGroupKFold(n_splits=inner, shuffle=True, random_state=seed),
        scoring="accuracy",
    )
    search.fit(features, labels, groups=groups)
    return search.best_estimator_


def per_class_scores(svm: Pipeline, features: np.ndarray, n_classes: int) -> np.ndarray:
    """SVM decision values as (N, n_classes); for two classes column 1 is the margin."""
    decision = svm.decision_function(features)
    if n_classes == 2:
        return np.stack([-decision, decision], axis=1)
    return decision


def load_fold_features(dataset: str, model: str, k: int, ids: np.ndarray) -> np.ndarray:
    """Features of fold k, checked to be in manifest order."""
    path = FEATURES_DIR / dataset / model / f"fold{k}.npz"
    if not path.exists():
        raise PipelineError(f"{path} is missing; run 'dvc repro features@{dataset}-{model}'.")
    with np.load(path, allow_pickle=True) as stored:
        if not np.array_equal(stored["ids"], ids):
            raise PipelineError(f"{path} is not in the order of the manifest; rerun the features stage.")
        return stored["features"]


def main(argv: list[str]) -> None:
    dataset, model_name = parse_args(argv, ["dataset", "model"], "python -m stages.evaluate DATASET MODEL")
    params = load_params()
    seed, svm_cfg = require(params, "seed"), require(params, "svm")
    check_range("svm.C", svm_cfg["C"], 1e-9, 1e9)
    manifest = load_manifest(dataset)
    labels, ids, groups = manifest["label"].to_numpy(), manifest["id"].to_numpy(), load_fold_groups(dataset)
    n_classes = int(manifest["label"].nunique())
    folds = load_test_folds(dataset, len(manifest))
    dense = pd.read_csv(MODELS_DIR / dataset / model_name / "training" / "dense_predictions.csv")
    prob_columns = [c for c in dense.columns if c.startswith("prob_")]
    freezing = read_json(MODELS_DIR / dataset / model_name / "training" / "freezing.json")["folds"][0]
    tag = f"{dataset}/{model_name}"
    clock = Stopwatch()

    fold_rows, prediction_tables = [], []
    for k, test in enumerate(folds, start=1):
        train = train_indices(test, len(labels))
        features = load_fold_features(dataset, model_name, k, ids)
        svm = fit_svm(features[train], labels[train], groups[train], svm_cfg, seed)
        svm_scores = per_class_scores(svm, features[test], n_classes)
        svm_pred = svm_scores.argmax(axis=1)
        fold_dense = dense[dense["fold"] == k].set_index("id").loc[ids[test]]
        dense_probs = fold_dense[prob_columns].to_numpy()
        dense_pred = dense_probs.argmax(axis=1)
        C = float(svm.named_steps["linearsvc"].C)
        for name, pred, scores in (("dense", dense_pred, dense_probs), ("svm", svm_pred, svm_scores)):
            fold_rows.append({"classifier": name, "fold": k,
                              **classification_metrics(labels[test], pred, scores, n_classes),
                              "svm_C": C if name == "svm" else np.nan})
        table = pd.DataFrame({"id": ids[test], "fold": k, "true": labels[test], "dense_pred": dense_pred,
                              "svm_pred": svm_pred})
        for c, column in enumerate(prob_columns):
            table[f"dense_{column}"] = dense_probs[:, c]
            table[f"svm_score_{column[len('prob_'):]}"] = svm_scores[:, c]
        prediction_tables.append(table)
        accuracies = {r["classifier"]: r["accuracy"] for r in fold_rows[-2:]}
        log("evaluate", f"{tag} fold {k}/{len(folds)}: accuracy dense {accuracies['dense']:.3f}, "
            f"svm {accuracies['svm']:.3f} (C={C:g}) ({clock})")

    per_fold = pd.DataFrame(fold_rows)
    metrics = {
        name: summarize_folds(per_fold[per_fold["classifier"] == name].drop(columns=["classifier", "fold", "svm_C"])
                              .dropna(axis=1).to_dict("records"))
        for name in ("dense", "svm")
    }
    metrics["layers_total"] = freezing["total_layers"]
    metrics["layers_trained"] = freezing["trained_layers"]
    metrics["trainable_params"] = freezing["trainable_params"]
    out = METRICS_DIR / dataset
    write_atomic(out / f"{model_name}.folds.csv", lambda tmp: per_fold.to_csv(tmp, index=False))
    write_atomic(out / f"{model_name}.predictions.csv",
                 lambda tmp: pd.concat(prediction_tables).to_csv(tmp, index=False))
    write_json(out / f"{model_name}.json", metrics)
    log("evaluate", f"{tag}: accuracy dense {metrics['dense']['accuracy']:.3f} ± {metrics['dense']['accuracy_std']:.3f}, "
        f"svm {metrics['svm']['accuracy']:.3f} ± {metrics['svm']['accuracy_std']:.3f}")


if __name__ == "__main__":
    run_stage(main)
