"""The paper's second classifier: a linear SVM on a fine-tuned network's features.

Features are standardized, then a linear SVM (scikit-learn ``LinearSVC``,
squared hinge) is fitted.  C is either fixed or chosen by a stratified inner
cross-validation that is grouped like the outer folds and runs on the
training rows only, so the test fold never influences the model.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.grouping import fewest_groups_per_class
from ultrasound_transfer.settings import SvmSettings


def linear_svm(C: float, seed: int) -> Pipeline:
    """Standardize features, then a linear SVM (squared hinge, liblinear)."""
    return make_pipeline(StandardScaler(), LinearSVC(C=C, max_iter=20_000, random_state=seed))


def fit_svm(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, svm: SvmSettings,
            seed: int) -> Pipeline:
    """Fit the SVM on one training part, tuning C by inner grouped CV if ``svm.C_grid`` is not empty."""
    grid = list(svm.C_grid)
    if not grid:
        return linear_svm(svm.C, seed).fit(features, labels)
    inner = svm.inner_folds
    _, fewest = fewest_groups_per_class(labels, groups)
    if fewest < inner:
        raise PipelineError(
            f"svm.inner_folds = {inner} but a class has only {fewest} groups in a training part; "
            "lower svm.inner_folds, or set svm.C_grid to [] to use the fixed svm.C."
        )
    search = GridSearchCV(
        linear_svm(svm.C, seed),
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
