"""classifiers.json holds each split's fitted classifiers exactly: read back, they decide as they did."""

import json

import numpy as np
import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.evaluation.classifiers import FittedDense, FittedSvm, SplitClassifiers
from ultrasound_transfer.evaluation.novelty import fit_novelty
from ultrasound_transfer.evaluation.operating_points import PlattScaling
from ultrasound_transfer.evaluation.svm import fit_svm
from ultrasound_transfer.outputs.classifiers import StudyClassifiers, load_classifiers, path, write_classifiers
from ultrasound_transfer.settings import SvmSettings


def fitted_splits(n_classes: int) -> tuple[list[SplitClassifiers], np.ndarray]:
    rng = np.random.default_rng(4)
    features = (rng.normal(2.0, 3.0, (90, 7)) * rng.uniform(0.01, 50, 7)).astype(np.float32)
    labels = np.arange(90) % n_classes
    features[:, 0] += labels * 20
    svm = SvmSettings(train_on="fit", C=1.0, C_grid=(0.1, 1.0), inner_folds=2, C_selection="inner")
    splits = []
    for k in (1, 2):
        model = fit_svm(features[k:], labels[k:], np.arange(90 - k).astype(str), svm=svm, seed=k)
        platt = PlattScaling(-1.3 * k, 0.2) if n_classes == 2 else None
        threshold = 0.37 * k if n_classes == 2 else np.nan
        novelty = fit_novelty(features[k:60], features[60:])
        splits.append(SplitClassifiers(k, FittedDense(threshold / 2, 80), FittedSvm(model, n_classes, platt,
                                                                                    threshold, 80), novelty))
    return splits, features


@pytest.mark.parametrize("n_classes", [2, 3])
def test_read_back_every_split_decides_bit_for_bit_as_fitted(project, n_classes):
    splits, features = fitted_splits(n_classes)
    write_classifiers("phantom", "VGG16", StudyClassifiers(
        splits=tuple(splits), feature_layer="pooled", operating_point="youden", target=0.9, novelty_threshold=2.5,
        recipe_sha256="ab" * 32, provenance={"params": {"seed": 42}}))
    kept = load_classifiers("phantom", "VGG16")
    assert kept.recipe_sha256 == "ab" * 32 and kept.novelty_threshold == 2.5 and kept.provenance["params"]["seed"] == 42
    for before, after in zip(splits, kept.splits):
        fresh, read = before.svm.read(features), after.svm.read(features)
        np.testing.assert_array_equal(fresh.probabilities, read.probabilities)
        np.testing.assert_array_equal(fresh.called, read.called)
        np.testing.assert_array_equal(before.novelty.novelty(features), after.novelty.novelty(features))
        assert read.C == fresh.C and after.k == before.k and after.novelty.median == before.novelty.median
        assert after.dense == before.dense or (np.isnan(after.dense.threshold) and np.isnan(before.dense.threshold))
    assert "__reduce__" not in path("phantom", "VGG16").read_text()           # numbers, not a pickle


def test_a_damaged_or_older_file_is_refused_naming_it_and_the_stage(project):
    splits, _ = fitted_splits(2)
    write_classifiers("phantom", "VGG16", StudyClassifiers(tuple(splits), "pooled", "youden", 0.9, 2.0, "0" * 64))
    record = json.loads(path("phantom", "VGG16").read_text())
    path("phantom", "VGG16").write_text(json.dumps({**record, "format": 0}))
    with pytest.raises(PipelineError, match=r"classifiers.json is of format 0.*dvc repro evaluate@phantom-VGG16"):
        load_classifiers("phantom", "VGG16")
    del record["splits"][0]["svm"]["coef"]
    path("phantom", "VGG16").write_text(json.dumps(record))
    with pytest.raises(PipelineError, match=r"damaged or incomplete \(KeyError: 'coef'\)"):
        load_classifiers("phantom", "VGG16")
    path("phantom", "VGG16").unlink()
    with pytest.raises(PipelineError, match=r"phantom x VGG16 was not evaluated here.*evaluate@phantom-VGG16"):
        load_classifiers("phantom", "VGG16")
