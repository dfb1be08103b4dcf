"""Classification metrics for one test fold, and their summary over folds.

Names say what they are.  For two classes, class 1 (malignant) is the positive
class: ``sensitivity`` (recall of malignant), ``specificity`` (recall of
benign), ``ppv`` (precision of malignant), ``npv``, ``f1`` (of malignant),
``balanced_accuracy`` (mean of sensitivity and specificity), ``accuracy`` and
``roc_auc``.  Averages over classes carry ``_macro``: ``precision_macro``,
``recall_macro``, ``f1_macro``.  For more classes (BUSI with ``normal``) there
is no positive class: ``accuracy``, ``balanced_accuracy``, the macro averages,
macro one-vs-rest ``roc_auc``, and per class ``recall_<class>`` and
``precision_<class>``.

A precision (``ppv``, ``npv``, ``precision_<class>``) with no image predicted
in its class is undefined: it is NaN, not 0 (which would pull fold means
down), and :func:`summarize_folds` counts the folds where it was.

:func:`threshold_metrics` reads the probability of malignant at an operating
point (:mod:`ultrasound_transfer.evaluation.operating_points`) and adds the
confusion counts; :func:`classification_metrics` reads the argmax, as the
paper does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

BINARY_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "roc_auc",
                  "precision_macro", "recall_macro", "f1_macro")
MULTICLASS_METRICS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc")


def roc_auc(y_true: np.ndarray, scores: np.ndarray, n_classes: int) -> float:
    """ROC-AUC from per-class scores (N, n_classes): binary, or macro one-vs-rest.

    The scores need not be probabilities (SVM decision values work): only their
    ranking within each class column matters.
    """
    if n_classes == 2:
        return float(roc_auc_score(y_true, scores[:, 1]))
    per_class = [roc_auc_score(y_true == c, scores[:, c]) for c in range(n_classes)]
    return float(np.mean(per_class))


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, class_names: list[str],
) -> dict[str, float]:
    """The metrics of one test fold (see the module's docstring for their names)."""
    n_classes = len(class_names)
    labels = list(range(n_classes))
    result = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
    }
    precision = precision_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    f1 = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    if n_classes == 2:
        result.update(sensitivity=float(recall[1]), specificity=float(recall[0]), ppv=float(precision[1]),
                      npv=float(precision[0]), f1=float(f1[1]))
    result["roc_auc"] = roc_auc(y_true, scores, n_classes)
    result.update(precision_macro=float(np.nanmean(precision)) if np.isfinite(precision).any() else np.nan,
                  recall_macro=float(np.nanmean(recall)), f1_macro=float(f1.mean()))
    if n_classes > 2:
        for c, name in enumerate(class_names):
            result[f"recall_{name}"], result[f"precision_{name}"] = float(recall[c]), float(precision[c])
    return result


def threshold_metrics(labels: np.ndarray, probability: np.ndarray, threshold: np.ndarray | float) -> dict[str, float]:
    """Two classes read at an operating point: malignant when ``probability >= threshold``.

    ``threshold`` may differ per image (pooled folds, each with its own).
    Returns the metrics of the module's docstring and the confusion counts
    ``tp``, ``fp``, ``tn``, ``fn``; undefined ratios are NaN.
    """
    thresholds = np.asarray(threshold, dtype=float)
    if np.isnan(thresholds).any():    # p >= NaN is False: every image would silently be called benign
        raise ValueError("threshold_metrics got a NaN threshold; an operating point was never chosen")
    malignant = np.asarray(labels) == 1
    called = np.asarray(probability, dtype=float) >= thresholds
    tp, fp = int(np.sum(called & malignant)), int(np.sum(called & ~malignant))
    tn, fn = int(np.sum(~called & ~malignant)), int(np.sum(~called & malignant))

    def ratio(a: int, b: int) -> float:
        return a / (a + b) if a + b else np.nan

    sensitivity, specificity = ratio(tp, fn), ratio(tn, fp)
    return {"accuracy": (tp + tn) / len(malignant), "balanced_accuracy": (sensitivity + specificity) / 2,
            "sensitivity": sensitivity, "specificity": specificity, "ppv": ratio(tp, fp), "npv": ratio(tn, fn),
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def summarize_folds(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1) of each metric over folds.

    Keys are ``<metric>`` for the mean and ``<metric>_std`` for the deviation,
    flat, so that ``dvc metrics diff`` lists them one per line.  Folds where a
    metric is undefined (NaN) are left out of both, and counted in
    ``<metric>_undefined_folds``.
    """
    summary = {}
    for name in per_fold[0]:
        values = np.array([fold[name] for fold in per_fold], dtype=float)
        defined = values[~np.isnan(values)]
        summary[name] = float(defined.mean()) if len(defined) else np.nan
        summary[f"{name}_std"] = float(defined.std(ddof=1)) if len(defined) > 1 else 0.0
        if len(defined) < len(values):
            summary[f"{name}_undefined_folds"] = int(len(values) - len(defined))
    return summary


def roc_points(labels: np.ndarray, scores: np.ndarray, classifier: str) -> pd.DataFrame:
    """ROC curve (fpr, tpr) of pooled test-fold scores (N, n_classes).

    Two classes: class 1 (malignant) is positive.  More: micro-average, every
    (image, class) pair scored one-vs-rest.
    """
    n_classes = scores.shape[1]
    if n_classes == 2:
        fpr, tpr, _ = roc_curve(labels, scores[:, 1])
    else:
        onehot = np.eye(n_classes)[labels]
        fpr, tpr, _ = roc_curve(onehot.ravel(), scores.ravel())
    return pd.DataFrame({"series": classifier, "fpr": fpr, "tpr": tpr})
