import numpy as np
import pytest

from stages.common import PipelineError
from stages.networks import build_classifier
from stages.training import (
    EpochLog, FoldReset, class_weights, compile_classifier, fit_fold, inner_validation_split, seed_everything,
)


def small_model():
    seed_everything(0)
    model, _ = build_classifier("VGG16", 32, 2, "none", 8, 0.5, 0.15)
    compile_classifier(model, "adam", 1e-3)
    return model


def train_once(model, x, y):
    seed_everything(5)
    fit_fold(model, x, y, (x[:4], y[:4]), 2, 4, 1, None, EpochLog("test", "fold", 2))
    return [v.numpy().copy() for v in model.variables]


def test_fold_reset_makes_training_repeat_bit_for_bit():
    x = np.random.default_rng(0).normal(size=(12, 32, 32, 3)).astype("float32")
    y = np.array([0, 1] * 6)
    model = small_model()
    reset = FoldReset(model)
    learning_rate = float(model.optimizer.learning_rate.numpy())
    first = train_once(model, x, y)
    reset.restore()
    assert float(model.optimizer.learning_rate.numpy()) == learning_rate
    assert int(model.optimizer.iterations.numpy()) == 0
    second = train_once(model, x, y)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, reset.model_values))


def test_inner_validation_split_is_grouped_stratified_and_inside_training_part():
    labels = np.repeat([0, 1] * 10, 3)
    groups = np.repeat(np.arange(20), 3)
    fit, val = inner_validation_split(labels, groups, 0.2, seed=0)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == len(labels)
    assert not set(groups[fit]) & set(groups[val])
    assert set(labels[val]) == {0, 1}
    assert len(inner_validation_split(labels, groups, 0.0, seed=0)[1]) == 0


def test_inner_validation_split_needs_enough_groups():
    with pytest.raises(PipelineError, match="validation_fraction"):
        inner_validation_split(np.array([0, 0, 1, 1]), np.array([1, 2, 3, 4]), 0.2, seed=0)


def test_balanced_class_weights():
    assert class_weights(np.array([0, 0, 0, 1]), "none") is None
    weights = class_weights(np.array([0, 0, 0, 1]), "balanced")
    assert weights[1] == pytest.approx(3 * weights[0])
