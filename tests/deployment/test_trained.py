"""The ensemble's parts, each checked against what the study computes with the same numbers."""

import keras
import numpy as np
import pytest

from ultrasound_transfer.choices import MODELS
from ultrasound_transfer.deployment.trained import plain_head, preprocessing_affine, svm_layer
from ultrasound_transfer.evaluation.classifiers import FittedSvm, two_columns
from ultrasound_transfer.evaluation.operating_points import PlattScaling
from ultrasound_transfer.evaluation.svm import linear_svm, per_class_scores
from ultrasound_transfer.networks.backbones import (
    HEAD_NORM_LAYER,
    HIDDEN_LAYER,
    OUTPUT_LAYER,
    Standardization,
    to_network_input,
)


def test_the_svm_layer_gives_the_platt_probability_of_the_fitted_svm():
    rng = np.random.default_rng(0)
    features = rng.normal(3.0, 2.0, (60, 12)) * rng.uniform(0.1, 5, 12)
    labels = (features[:, 0] + rng.normal(0, 1, 60) > 3).astype(int)
    model = linear_svm(C=0.5, seed=1).fit(features, labels)
    platt = PlattScaling(a=-1.7, b=0.3)
    svm = FittedSvm(model, 2, platt, 0.5, 60)
    expected = two_columns(platt.probability(per_class_scores(model, features, 2)[:, 1]))[:, 1]
    assert np.allclose(svm.read(features).probabilities[:, 1], expected)
    layer = svm_layer(svm, "split1_svm")
    got = keras.ops.convert_to_numpy(layer(features.astype(np.float32)))[:, 0]
    assert np.abs(got - expected).max() < 1e-5 and np.ptp(expected) > 0.5


def test_the_plain_head_folds_the_standardization_into_its_hidden_layer():
    rng = np.random.default_rng(1)
    inputs = keras.Input((16,))
    x = Standardization(name=HEAD_NORM_LAYER)(inputs)
    x = keras.layers.Dense(8, activation="relu", name=HIDDEN_LAYER)(x)
    head = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name=OUTPUT_LAYER)(x))
    for variable in head.weights:
        variable.assign(rng.normal(0, 1, variable.shape).astype(np.float32))
    norm = head.get_layer(HEAD_NORM_LAYER)
    norm.mean.assign(rng.normal(5, 2, 16).astype(np.float32))
    norm.scale.assign(rng.uniform(0.05, 2, 16).astype(np.float32))
    pooled = rng.normal(5, 3, (10, 16)).astype(np.float32)
    hidden, output = plain_head(head, "split1")
    folded = keras.ops.convert_to_numpy(output(hidden(pooled)))
    assert np.abs(folded - keras.ops.convert_to_numpy(head(pooled))).max() < 1e-5
    assert not any(isinstance(layer, Standardization) for layer in (hidden, output))


@pytest.mark.parametrize("model_name", MODELS)
def test_the_preprocessing_layer_is_each_networks_own_preprocess_input(model_name):
    gray = np.random.default_rng(2).integers(0, 256, (3, 8, 8)).astype(np.uint8)
    scale, offset = preprocessing_affine(model_name)
    expected = to_network_input(gray, model_name)
    assert np.abs(gray[..., None].astype(np.float32) * scale + offset - expected).max() < 1e-4


def test_the_ensemble_reads_each_split_as_its_own_network_does_even_where_keras_numbers_the_layers():
    """InceptionV3's layers are named by a process-wide counter: each split's network is cut by position."""
    from ultrasound_transfer.deployment.trained import ensemble_network, ensemble_parts
    from ultrasound_transfer.evaluation.classifiers import FittedDense, SplitClassifiers
    from ultrasound_transfer.evaluation.novelty import fit_novelty
    from ultrasound_transfer.networks.backbones import build_classifier, feature_extractor
    from ultrasound_transfer.settings import HeadSettings

    rng = np.random.default_rng(3)
    folds, splits = [], []
    for k in (1, 2):
        keras.utils.set_random_seed(0)        # the same frozen part, as the study's splits have
        fold, _ = build_classifier("InceptionV3", image_size=75, n_classes=2, weights="none", ft_fraction=0.15,
                                   head=HeadSettings(units=8, dropout=0.5, norm="standardize"))
        for layer in fold.layers:
            if layer.trainable and layer.weights:   # what training changed differs per split
                for variable in layer.trainable_weights:
                    variable.assign(variable + rng.normal(0, 0.01, variable.shape).astype(np.float32))
        features = rng.normal(0, 1, (30, 2048))
        svm = FittedSvm(linear_svm(C=1.0, seed=0).fit(features, np.arange(30) % 2), 2, PlattScaling(-1.0, 0.0),
                        0.5, 30)
        folds.append(fold)
        reference = fit_novelty(rng.normal(0, 1, (30, 2048)) * k, rng.normal(0, 1, (10, 2048)))
        splits.append(SplitClassifiers(k=k, dense=FittedDense(0.5, 30), svm=svm, novelty=reference))
    assert folds[0].layers[5].name != folds[1].layers[5].name
    network = ensemble_network(ensemble_parts(folds, splits, model_name="InceptionV3", feature_layer="pooled"))
    gray = rng.integers(0, 256, (3, 75, 75)).astype(np.uint8)
    out = network.predict(gray.astype(np.float32), verbose=0)
    inputs = to_network_input(gray, "InceptionV3")
    for k, (fold, split) in enumerate(zip(folds, splits)):
        dense = keras.ops.convert_to_numpy(fold(inputs))[:, 1]
        svm = split.svm.read(keras.ops.convert_to_numpy(feature_extractor(fold, "pooled")(inputs))).probabilities[:, 1]
        assert np.abs(out["dense_splits"][:, k] - dense).max() < 1e-4
        assert np.abs(out["svm_splits"][:, k] - svm).max() < 1e-4
    pooled = [keras.ops.convert_to_numpy(feature_extractor(fold, "pooled")(inputs)) for fold in folds]
    novelty = np.mean([split.novelty.novelty(p) for split, p in zip(splits, pooled)], axis=0)
    assert np.abs(out["novelty"][:, 0] / novelty - 1).max() < 1e-4 and novelty.min() > 0
