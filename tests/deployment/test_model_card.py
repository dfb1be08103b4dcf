"""The model card: every fact of it read from the trained study and its figures, none from params.yaml.

The card is built here for a study whose every fact differs from the repository's params.yaml (another
network, weights, size, squaring rule, folds, epochs, rule...), so that a fact read from the wrong place shows.
"""

import numpy as np

from ultrasound_transfer.deployment.model_card import figure, model_card
from ultrasound_transfer.deployment.trained import TrainedNetwork
from ultrasound_transfer.evaluation.classifiers import FittedDense, FittedSvm, SplitClassifiers
from ultrasound_transfer.evaluation.novelty import NoveltyReference
from ultrasound_transfer.evaluation.operating_points import PlattScaling
from ultrasound_transfer.evaluation.svm import linear_svm
from ultrasound_transfer.outputs.classifiers import StudyClassifiers
from ultrasound_transfer.outputs.prepared import Preprocessing
from ultrasound_transfer.outputs.trained_study import TrainedStudy
from ultrasound_transfer.outputs.training_record import NetworkRecipe
from ultrasound_transfer.settings import HeadSettings


def the_study(*, dataset: str = "ddti", weights: str = "imagenet", grouping: str = "exact") -> TrainedNetwork:
    svm = linear_svm(1.0, 0).fit(np.random.default_rng(0).normal(size=(20, 4)), np.arange(20) % 2)
    splits = tuple(SplitClassifiers(k, FittedDense(0.30 + 0.1 * k, 50), FittedSvm(svm, 2, PlattScaling(-1, 0),
                                                                                   0.2 * k, 50),
                                    NoveltyReference(np.zeros(4), np.ones(4), 1.0)) for k in (1, 2, 3, 4))
    recipe = NetworkRecipe(
        dataset=dataset, model="ResNet101", class_names=("benign", "malignant"),
        preprocessing=Preprocessing(image_size=112, resize="crop", gray="BT.601"), weights=weights,
        ft_fraction=0.5, head=HeadSettings(units=64, dropout=0.3, norm="standardize"), batch_norm="inference",
        precision="float32", seed=17, deterministic_ops=True, frozen_sha256="f" * 64, fold_sha256=("a" * 64,) * 4,
        backend="tensorflow", keras="3.15.1",
        folds={"n_splits": 2, "repeats": 2, "grouping": grouping, "seed": 17, "n_images": 90, "n_groups": 40},
        provenance={"params": {"finetune": {"epochs": 33}, "image_size": 112}, "code_revision": "abc1234+uncommitted"})
    fitted = StudyClassifiers(splits=splits, feature_layer="head", operating_point="sensitivity", target=0.85,
                              novelty_threshold=2.75, recipe_sha256="0" * 64,
                              provenance={"params": {"evaluation": {"confidence_level": 0.9,
                                                                    "bootstrap_resamples": 777,
                                                                    "case_score": "max"}}})
    return TrainedNetwork(TrainedStudy(recipe, fitted, ()), folds=[], parts=None, network=None)


INTERNAL = {"data": {"images": 90, "images_benign": 50, "images_malignant": 40, "groups": 40, "cases": 45},
            "layers_total": 100, "layers_trained": 50, "trained_share": 0.61,
            "image": {"dense": {"roc_auc": 0.811, "roc_auc_ci_low": 0.701, "roc_auc_ci_high": 0.902, "brier": 0.2},
                      "svm": {"roc_auc": 0.833, "roc_auc_ci_low": 0.722, "roc_auc_ci_high": 0.933}},
            "case": {"dense": {"roc_auc": 0.844, "roc_auc_ci_low": 0.7, "roc_auc_ci_high": 0.95},
                     "svm": {"roc_auc": 0.855, "roc_auc_ci_low": 0.71, "roc_auc_ci_high": 0.96}}}


def test_a_figure_carries_its_interval_and_a_missing_one_says_so():
    section = {"roc_auc": 0.8123, "roc_auc_ci_low": 0.7, "roc_auc_ci_high": 0.9, "brier": 0.2}
    assert figure(section, "roc_auc") == "0.812 [0.700, 0.900]"
    assert figure(section, "brier") == "0.200" and figure(section, "ece") == "—"


def test_every_fact_of_the_card_is_the_studys_own():
    card = model_card(the_study(), internal=INTERNAL, external={}, files={"keras": "x.keras"}, experiment="exp1")
    facts = [
        "# Model card: ResNet101 on ddti", "the ensemble of the study's 4 split networks",          # model
        "`ft_fraction` 0.5 (the last 50 of 100", "61.0 % of the backbone's parameters", "initial weights `imagenet`",
        "input 112 px", "up to 33 epochs", "SVM input: `head` features", "seed 17",
        "experiment `exp1`", "code revision `abc1234+uncommitted`", "Keras 3.15.1 on tensorflow",      # provenance
        "frozen part fingerprint `ffffffffffffffff`",
        "TI-RADS categories", "90 images (50 benign, 40 malignant) of 40 groups and 45 cases",        # data
        "2-fold stratified cross-validation, grouping `exact`", "2 repeat(s), seed 17",
        "90 % intervals from 777 bootstrap", "| ROC-AUC | 0.811 [0.701, 0.902] | 0.833 [0.722, 0.933] |",
        "| Brier score | 0.200 | — |", "the max of its images' probabilities",                      # figures
        "| ROC-AUC | 0.844 [0.700, 0.950] | 0.855 [0.710, 0.960] |",
        "None were run for this network",                                                              # external
        "**Rule**: `sensitivity` (target 0.85)", "malignant when p(malignant) ≥ 0.5500",              # thresholds
        "malignant when p(malignant) ≥ 0.5000", "above 2.75 (99% of the study's held-out images",      # novelty
        "**Labels are TI-RADS categories, not pathology**", "square it to 112 px by `crop`",           # limits, use
    ]
    assert [fact for fact in facts if fact not in card] == []
    assert "Random initial weights" not in card and "Synthetic training data" not in card


def test_the_card_names_the_demos_limits_and_external_figures_where_they_exist():
    external = {"busi": {"image": {"dense": {"roc_auc": 0.612, "roc_auc_ci_low": 0.5, "roc_auc_ci_high": 0.7}}}}
    card = model_card(the_study(dataset="phantom", weights="none", grouping="none"), internal=INTERNAL,
                      external=external, files={"keras": "x.keras", "onnx": "x.onnx"}, experiment=None)
    for fact in ("**Random initial weights**", "**Synthetic training data**", "the workspace",
                 "## External figures: read on busi", "| ROC-AUC | 0.612 [0.500, 0.700] | — |",
                 "a fold may share patients with the training part", "x.keras, x.onnx"):
        assert fact in card, fact
    assert "None were run for this network" not in card
