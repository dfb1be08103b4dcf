import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

from ultrasound_transfer.evaluation.scoring import classification_metrics, summarize_folds, threshold_metrics


def test_binary_metrics_take_malignant_as_positive_and_macro_averages_say_so():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    scores = rng.random(60) + 0.4 * y
    pred = (scores > 0.7).astype(int)
    m = classification_metrics(y, pred, np.stack([1 - scores, scores], axis=1), ["benign", "malignant"])
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["ppv"] == pytest.approx(tp / (tp + fp)) and m["npv"] == pytest.approx(tn / (tn + fn))
    assert m["f1"] == pytest.approx(f1_score(y, pred))                     # of the malignant class
    assert m["balanced_accuracy"] == pytest.approx((m["sensitivity"] + m["specificity"]) / 2)
    assert m["precision_macro"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["recall_macro"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, scores))
    assert "precision" not in m and "recall" not in m                     # no name that hides a macro average


def test_multiclass_has_macro_and_per_class_metrics_and_no_positive_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet(np.ones(3), 90)
    probs[np.arange(90), y] += 0.3
    probs /= probs.sum(axis=1, keepdims=True)
    pred = probs.argmax(1)
    m = classification_metrics(y, pred, probs, ["benign", "malignant", "normal"])
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["recall_macro"] == pytest.approx(m["balanced_accuracy"])
    per_class = recall_score(y, pred, average=None)
    assert [m["recall_benign"], m["recall_malignant"], m["recall_normal"]] == pytest.approx(per_class)
    assert m["precision_normal"] == pytest.approx(precision_score(y, pred, average=None)[2])
    assert "sensitivity" not in m and "specificity" not in m and "ppv" not in m


def test_a_class_never_predicted_has_an_undefined_precision_not_zero():
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]), np.array([[1, 0]] * 4),
                               ["benign", "malignant"])
    assert np.isnan(m["ppv"]) and m["npv"] == 0.5
    assert m["precision_macro"] == pytest.approx(0.5)      # over the classes where it is defined
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0 and m["balanced_accuracy"] == 0.5


def test_summary_has_mean_and_sample_std_and_counts_undefined_folds():
    s = summarize_folds([{"accuracy": 0.5, "ppv": 0.4}, {"accuracy": 0.7, "ppv": np.nan},
                         {"accuracy": 0.9, "ppv": 0.6}])
    assert s["accuracy"] == pytest.approx(0.7) and "accuracy_undefined_folds" not in s
    assert s["accuracy_std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert s["ppv"] == pytest.approx(0.5) and s["ppv_undefined_folds"] == 1     # not (0.4 + 0 + 0.6) / 3


def test_threshold_metrics_read_the_probability_at_each_images_threshold():
    labels = np.array([1, 1, 1, 0, 0, 0])
    probability = np.array([0.9, 0.6, 0.3, 0.55, 0.2, 0.1])
    m = threshold_metrics(labels, probability, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 2)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["ppv"] == pytest.approx(2 / 3)
    per_image = threshold_metrics(labels, probability, np.array([0.5, 0.5, 0.25, 0.6, 0.5, 0.5]))
    assert (per_image["tp"], per_image["fp"]) == (3, 0) and per_image["specificity"] == 1.0
    assert np.isnan(threshold_metrics(labels, probability, 2.0)["ppv"])   # nothing called malignant


def test_a_threshold_never_chosen_is_refused_not_read_as_calling_every_image_benign():
    with pytest.raises(ValueError, match="NaN threshold"):
        threshold_metrics(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9]), np.array([0.5, np.nan, 0.5]))
