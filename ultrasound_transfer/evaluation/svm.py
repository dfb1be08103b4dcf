"""The paper's second classifier: a linear SVM on a fine-tuned network's features.

Features are standardized, then a linear SVM (scikit-learn ``LinearSVC``,
squared hinge) is fitted.  C is fixed, or chosen from ``svm.C_grid`` where
the test fold cannot influence it (``svm.C_selection``):

* ``validation`` (the default): each C is fitted on the SVM's training images
  and scored on the split's validation images, which neither the SVM nor the
  fine-tuned network learned from (the network only stopped early on them):
  the features of the images the network trained on are fitted better than a
  new image's will be, so an inner CV on them favours C values that trust
  those features too much, and C jumped by factors of 1000 between folds;
  the validation images are also where the dense head's tuning (its early
  stopping, its calibration, its threshold) happens, so both classifiers get
  the same tuning budget on the same images;
* ``inner``: a stratified inner cross-validation over the SVM's training
  images, grouped like the outer folds.

The score is ROC-AUC (macro one-vs-rest for more classes), a continuous
score: accuracy on a few dozen images ties often, and ties went to the
grid's smallest C.  Among C values that tie on the best AUC, the middle one
is taken (of an even number, the smaller, the larger margin).

:func:`calibration_decisions` gives the decision values on which the SVM's
Platt scaling and operating point are fitted: images neither it nor the
network learned from.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.grouping import fewest_groups_per_class
from ultrasound_transfer.evaluation.scoring import roc_auc
from ultrasound_transfer.settings import SvmSettings


def linear_svm(C: float, seed: int) -> Pipeline:
    """Standardize features, then a linear SVM (squared hinge, liblinear)."""
    return make_pipeline(StandardScaler(), LinearSVC(C=C, max_iter=20_000, random_state=seed))


def per_class_scores(svm: Pipeline, features: np.ndarray, n_classes: int) -> np.ndarray:
    """SVM decision values as (N, n_classes); for two classes column 1 is the margin."""
    decision = svm.decision_function(features)
    if n_classes == 2:
        return np.stack([-decision, decision], axis=1)
    return decision


def inner_auc(estimator: Pipeline, features: np.ndarray, labels: np.ndarray) -> float:
    """Scorer of the inner search: ROC-AUC of the decision values (macro one-vs-rest for more classes)."""
    n_classes = len(estimator.classes_)
    if len(np.unique(labels)) < n_classes:
        return np.nan
    return roc_auc(labels, per_class_scores(estimator, features, n_classes), n_classes)


def middle_of_best(cv_results: dict) -> int:
    """Index of the candidate the search refits: the middle of those tied at the best mean inner score."""
    scores = np.asarray(cv_results["mean_test_score"], dtype=float)
    if np.isnan(scores).all():
        raise PipelineError("the SVM's inner ROC-AUC is undefined for every C (an inner fold lacks a class); "
                            "lower svm.inner_folds.")
    best = np.nanmax(scores)
    tied = np.flatnonzero(np.isclose(scores, best, rtol=0, atol=1e-12))
    C = np.asarray(cv_results["param_linearsvc__C"], dtype=float)[tied]
    return int(tied[np.argsort(C, kind="stable")][(len(tied) - 1) // 2])


def inner_folds_for(labels: np.ndarray, groups: np.ndarray, *, svm: SvmSettings, seed: int,
                    purpose: str = "choosing C") -> StratifiedGroupKFold:
    """The grouped, stratified inner split, refused when a class has too few groups for it."""
    _, fewest = fewest_groups_per_class(labels, groups)
    if fewest < svm.inner_folds:
        fix = ("lower svm.inner_folds, or set svm.C_grid to [] to use the fixed svm.C" if purpose == "choosing C"
               else "lower svm.inner_folds, or give the dense head validation images "
                    "(finetune.validation_fraction > 0) with svm.train_on: fit")
        raise PipelineError(
            f"svm.inner_folds = {svm.inner_folds} for {purpose}, but a class has only {fewest} groups in a "
            f"training part; {fix}."
        )
    return StratifiedGroupKFold(n_splits=svm.inner_folds, shuffle=True, random_state=seed)


def middle_best_C(grid: list[float], scores: np.ndarray) -> int:
    """Index in ``grid`` (sorted) of the C to keep: the middle of those tied at the best score."""
    scores = np.asarray(scores, dtype=float)
    if np.isnan(scores).all():
        raise PipelineError("the SVM's ROC-AUC is undefined for every C (the images it is scored on lack a class); "
                            "raise finetune.validation_fraction, or set svm.C_selection: inner.")
    tied = np.flatnonzero(np.isclose(scores, np.nanmax(scores), rtol=0, atol=1e-12))
    return int(tied[(len(tied) - 1) // 2])


def fit_svm_on_validation(features: np.ndarray, labels: np.ndarray, *, validation_features: np.ndarray,
                          validation_labels: np.ndarray, grid: list[float], seed: int) -> Pipeline:
    """Each C of ``grid`` fitted on the training rows, the one whose ROC-AUC on the validation rows is best kept."""
    models = [linear_svm(C, seed).fit(features, labels) for C in grid]
    n_classes = len(np.unique(labels))
    scores = [roc_auc(validation_labels, per_class_scores(m, validation_features, n_classes), n_classes)
              if len(np.unique(validation_labels)) == n_classes else np.nan for m in models]
    return models[middle_best_C(grid, scores)]


def fit_svm(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, svm: SvmSettings, seed: int,
            validation: tuple[np.ndarray, np.ndarray] | None = None) -> Pipeline:
    """Fit the SVM on one training part, choosing C from ``svm.C_grid`` if it is not empty: on ``validation``
    (features, labels) under ``svm.C_selection: validation``, else by inner grouped CV."""
    grid = sorted(svm.C_grid)
    if not grid:
        return linear_svm(svm.C, seed).fit(features, labels)
    if svm.C_selection == "validation":
        if validation is None or not len(validation[1]):
            raise PipelineError("svm.C_selection = validation needs the split's validation images; raise "
                                "finetune.validation_fraction, or set svm.C_selection: inner.")
        return fit_svm_on_validation(features, labels, validation_features=validation[0],
                                     validation_labels=validation[1], grid=grid, seed=seed)
    search = GridSearchCV(linear_svm(svm.C, seed), {"linearsvc__C": grid},
                          cv=inner_folds_for(labels, groups, svm=svm, seed=seed), scoring=inner_auc,
                          refit=middle_of_best)
    search.fit(features, labels, groups=groups)
    return search.best_estimator_


def chosen_C(model: Pipeline) -> float:
    return float(model.named_steps["linearsvc"].C)


def svm_arrays(model: Pipeline) -> dict:
    """A fitted SVM as plain numbers: its C, classes, standardization (``mean``, ``scale``), ``coef``, ``intercept``.

    That is the whole of a fitted linear SVM: its decision value is
    ``((x - mean) / scale) . coef + intercept``.  Kept as numbers, not as a
    pickle, so that the file runs no code when read and does not depend on
    the scikit-learn version that wrote it (:func:`svm_from_arrays`).
    """
    scaler, linear = model.named_steps["standardscaler"], model.named_steps["linearsvc"]
    return {"C": float(linear.C), "classes": linear.classes_.tolist(), "mean": scaler.mean_.tolist(),
            "scale": scaler.scale_.tolist(), "coef": linear.coef_.tolist(), "intercept": linear.intercept_.tolist()}


def svm_from_arrays(stored: dict) -> Pipeline:
    """The fitted SVM that :func:`svm_arrays` recorded: scikit-learn's own objects with those fitted values, so
    its decision values are computed by the very code that computed them in ``evaluate``."""
    model = linear_svm(float(stored["C"]), seed=0)      # the seed only drives fitting, which is not redone
    scaler, linear = model.named_steps["standardscaler"], model.named_steps["linearsvc"]
    scaler.mean_ = np.asarray(stored["mean"], dtype=np.float64)
    scaler.scale_ = np.asarray(stored["scale"], dtype=np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = linear.n_features_in_ = len(scaler.mean_)
    scaler.n_samples_seen_ = 0
    linear.coef_ = np.asarray(stored["coef"], dtype=np.float64)
    linear.intercept_ = np.asarray(stored["intercept"], dtype=np.float64)
    linear.classes_ = np.asarray(stored["classes"])
    if linear.coef_.shape != (1 if len(linear.classes_) == 2 else len(linear.classes_), len(scaler.mean_)):
        raise PipelineError(f"a stored SVM's weights have shape {linear.coef_.shape}, which does not fit its "
                            f"{len(scaler.mean_)} features and {len(linear.classes_)} classes; the file is damaged.")
    return model


def calibration_decisions(model: Pipeline, features: np.ndarray, labels: np.ndarray, groups: np.ndarray, *,
                          validation: np.ndarray, train: np.ndarray, svm: SvmSettings,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (in manifest order) and malignant decision values of images the SVM did not learn from.

    ``validation`` holds the dense head's inner validation rows.  Under
    ``svm.train_on: fit`` the SVM never saw them: the fitted SVM's decision
    values on them.  Under ``training`` it learned from them, so out-of-inner-fold
    decision values over its training rows at the chosen C, of which the
    validation rows are kept: the fine-tuned network never trained on those
    images either (it only stopped early on them), so their features are as
    new to it as a test image's, where the fit images' are not.  Without
    validation rows (``finetune.validation_fraction: 0``, allowed only with the
    argmax operating point) the out-of-inner-fold values of every training row.
    """
    if svm.train_on == "fit" and len(validation):
        return validation, model.decision_function(features[validation])
    folds = inner_folds_for(labels[train], groups[train], svm=svm, seed=seed, purpose="calibrating the SVM")
    decision = cross_val_predict(linear_svm(chosen_C(model), seed), features[train], labels[train],
                                 groups=groups[train], cv=folds, method="decision_function")
    keep = np.isin(train, validation) if len(validation) else np.ones(len(train), dtype=bool)
    return train[keep], decision[keep]
