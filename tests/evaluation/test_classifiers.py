"""Both classifiers' operating points: the case one chosen on the same scores as the image one."""

import numpy as np
import pytest

from ultrasound_transfer.evaluation.classifiers import fit_dense_reading, fit_svm_reading
from ultrasound_transfer.settings import EvaluationSettings, SvmSettings

SENSITIVITY = EvaluationSettings(operating_point="sensitivity", target=0.9)


def planted(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features whose last column carries the label with noise, labels, and one group per pair of images."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n // 2) % 2, 2)
    features = np.column_stack([rng.normal(size=(n, 4)), labels + rng.normal(0, 1.0, n)])
    return features, labels, np.repeat(np.arange(n // 2), 2).astype(str)


@pytest.mark.parametrize("train_on", ["fit", "training"])
def test_with_one_image_per_case_the_svms_case_operating_point_is_its_image_one(train_on):
    # A case of one image scores as that image, so the same rule on the same images must land on the same
    # threshold. Read on the validation images the SVM learned from (train_on: training), it would not: their
    # decision values are better separated than those of images new to it.
    features, labels, groups = planted()
    rows = np.arange(len(labels))
    validation = rows[groups.astype(int) % 3 == 0]
    train = rows if train_on == "training" else np.setdiff1d(rows, validation)
    fitted = fit_svm_reading(features, labels, groups, train=train, validation=validation,
                             svm=SvmSettings(train_on, 1.0, (0.01, 1.0), 3, C_selection="inner"),
                             evaluation=SENSITIVITY, seed=0, cases=rows.astype(str))
    assert fitted.case_threshold == fitted.threshold


def test_with_one_image_per_case_the_dense_heads_case_operating_point_is_its_image_one():
    _, labels, _ = planted()
    malignant = np.clip(0.3 + 0.4 * labels + np.random.default_rng(1).normal(0, 0.2, len(labels)), 0.01, 0.99)
    fitted = fit_dense_reading(labels, np.column_stack([1 - malignant, malignant]), n_train=100,
                               evaluation=SENSITIVITY, validation_cases=np.arange(len(labels)).astype(str))
    assert fitted.case_threshold == fitted.threshold


def test_without_validation_images_argmax_reads_cases_at_the_image_threshold_not_at_none():
    # finetune.validation_fraction: 0 is allowed under argmax; a NaN case threshold would call every case benign.
    features, labels, groups = planted()
    argmax = EvaluationSettings(operating_point="argmax", dense_calibration="none")
    rows, none = np.arange(len(labels)), np.array([], dtype=int)
    dense = fit_dense_reading(labels[none], np.zeros((0, 2)), n_train=len(rows), evaluation=argmax,
                              validation_cases=rows[none].astype(str))
    svm = fit_svm_reading(features, labels, groups, train=rows, validation=none,
                          svm=SvmSettings("fit", 1.0, (0.01, 1.0), 3, C_selection="inner"), evaluation=argmax,
                          seed=0, cases=groups)
    assert dense.case_threshold == dense.threshold == 0.5
    assert svm.case_threshold == svm.threshold
