"""Classification metrics for one test fold, and their summary over folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score, roc_curve

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "sensitivity", "specificity")


def roc_auc(y_true: np.ndarray, scores: np.ndarray, n_classes: int) -> float:
    """ROC-AUC from per-class scores (N, n_classes): binary, or macro one-vs-rest.

    The scores need not be probabilities (SVM decision values work): only their
    ranking within each class column matters.
    """
    if n_classes == 2:
        return float(roc_auc_score(y_true, scores[:, 1]))
    per_class = [roc_auc_score(y_true == c, scores[:, c]) for c in range(n_classes)]
    return float(np.mean(per_class))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, macro precision / recall / F1, ROC-AUC; for two classes also
    sensitivity (recall of class 1, the malignant one) and specificity (recall
    of class 0).  A class never predicted counts as precision 0.
    """
    labels = list(range(n_classes))
    result = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "roc_auc": roc_auc(y_true, scores, n_classes),
    }
    if n_classes == 2:
        per_class = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
        result["sensitivity"], result["specificity"] = float(per_class[1]), float(per_class[0])
    return result


def summarize_folds(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1) of each metric over folds.

    Keys are ``<metric>`` for the mean and ``<metric>_std`` for the deviation,
    flat, so that ``dvc metrics diff`` lists them one per line.
    """
    summary = {}
    for name in (m for m in METRICS if m in per_fold[0]):
        values = np.array([fold[name] for fold in per_fold], dtype=float)
        summary[name] = float(values.mean())
        summary[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
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
