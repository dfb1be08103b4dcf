"""The external stage on real tiny networks: trained on the phantom, read on the phantom's second site."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from stages import download, evaluate, external, finetune, folds, normalize, report
from tests.conftest import Project, default_params, merged
from ultrasound_transfer.common import PipelineError

# One process under pytest -n builds its study once (tests/conftest.py, SHARED_STUDY_MODULES).
pytestmark = pytest.mark.slow

PAIR = "phantom-to-phantom_site_b"
TINY = {"datasets": ["phantom", "phantom_site_b"], "models": ["VGG16"], "image_size": 32,
        "external": [{"train": "phantom", "test": "phantom_site_b"}],
        "download": {"phantom": {"count": 24, "images_per_patient": 2, "native_size": 48},
                     "phantom_site_b": {"count": 24, "images_per_patient": 2, "native_size": 56}},
        "cv": {"n_splits": 3}, "finetune": {"epochs": 1, "batch_size": 8, "validation_fraction": 0.25},
        "svm": {"C_grid": [0.1, 1.0], "inner_folds": 2}, "evaluation": {"bootstrap_resamples": 200}}


def train_and_read_externally(root, change=None) -> Project:
    """The phantom's VGG16 trained and evaluated, the second site prepared and its folds made, and the
    phantom's networks read on the second site, in one project at ``root``."""
    project = Project(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        project.write_params(merged(merged(default_params(), TINY), change or {}))
        for dataset in TINY["datasets"]:
            download.main([dataset])
            normalize.main([dataset])
            folds.main([dataset])
        finetune.main(["phantom", "VGG16"])
        evaluate.main(["phantom", "VGG16"])
        external.main(["phantom", "phantom_site_b", "VGG16"])
    return project


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_and_read_externally(tmp_path_factory.mktemp("external"))


def outputs(project):
    folder = project / f"metrics/external/{PAIR}"
    return json.loads((folder / "VGG16.json").read_text()), pd.read_csv(folder / "VGG16.predictions.csv")


def test_every_target_image_is_read_with_intervals_over_its_groups_beside_the_internal_figures(trained):
    metrics, predictions = outputs(trained)
    target = pd.read_csv(trained / "data/prepared/phantom_site_b/manifest.csv")
    assert predictions["id"].tolist() == target["id"].tolist()
    assert metrics["data"]["images"] == len(target) and metrics["splits"] == 3
    per_split = pd.read_csv(trained / "metrics/cv/phantom/VGG16.folds.csv")
    for classifier in ("dense", "svm"):
        image, gap = metrics["image"][classifier], metrics["gap"][classifier]
        assert image["roc_auc_ci_low"] <= image["roc_auc"] <= image["roc_auc_ci_high"]
        # The internal figure is the mean of evaluate's own per-split figures: like for like, split by split.
        own = per_split.loc[per_split["classifier"] == classifier]
        assert gap["internal_roc_auc"] == pytest.approx(own["roc_auc"].mean(), abs=1e-9)
        assert gap["internal_sensitivity"] == pytest.approx(own["sensitivity"].mean(), abs=1e-9)
        external_auc = np.mean([roc_auc_score(predictions["true"],
                                              predictions[f"{classifier}_split{k}_prob_malignant"]) for k in (1, 2, 3)])
        assert gap["external_roc_auc"] == pytest.approx(external_auc)
        difference = gap["external_roc_auc"] - gap["internal_roc_auc"]
        assert gap["external_minus_internal_roc_auc"] == pytest.approx(difference)
        low, high = gap["external_minus_internal_roc_auc_ci_low"], gap["external_minus_internal_roc_auc_ci_high"]
        assert low <= gap["external_minus_internal_roc_auc"] <= high
        malignant = predictions[f"{classifier}_prob_malignant"].to_numpy()
        called = predictions[f"{classifier}_class"] == "malignant"
        assert np.array_equal(called, malignant >= predictions[f"{classifier}_threshold"])
    assert "case" in metrics                      # the second site has two views per patient


def test_target_cases_are_read_at_the_splits_case_operating_points_not_the_image_ones(trained):
    metrics, predictions = outputs(trained)
    kept = json.loads((trained / "models/phantom/VGG16/classifiers.json").read_text())
    for classifier in ("dense", "svm"):
        threshold = np.mean([split[classifier]["case_threshold"] for split in kept["splits"]])
        assert predictions[f"{classifier}_case_threshold"].to_numpy() == pytest.approx(threshold)
        cases = predictions.groupby("group").agg(true=("true", "first"),
                                                 malignant=(f"{classifier}_prob_malignant", "mean"))
        called = cases["malignant"] >= threshold
        assert metrics["case"][classifier]["tp"] == int((called & (cases["true"] == 1)).sum())
        assert metrics["case"][classifier]["fp"] == int((called & (cases["true"] == 0)).sum())


def test_nothing_learns_from_the_target_labels(trained, tmp_path, monkeypatch):
    """With the target's labels shuffled, every probability and threshold stays; only the figures move."""
    copy = tmp_path / "copy"
    for folder in ("data", "models", "metrics"):
        shutil.copytree(trained / folder, copy / folder)
    shutil.copy(trained / "params.yaml", copy / "params.yaml")
    manifest_path = copy / "data/prepared/phantom_site_b/manifest.csv"
    manifest = pd.read_csv(manifest_path, keep_default_na=False)
    flipped = 1 - manifest["label"]
    manifest.assign(label=flipped, class_name=np.where(flipped == 1, "malignant", "benign")).to_csv(
        manifest_path, index=False)
    monkeypatch.chdir(copy)
    external.main(["phantom", "phantom_site_b", "VGG16"])
    before, after = outputs(trained), outputs(Project(copy))
    scores = [c for c in before[1].columns if "_prob_" in c or c.endswith("_threshold")]
    assert np.array_equal(before[1][scores].to_numpy(), after[1][scores].to_numpy())
    for classifier in ("dense", "svm"):
        assert after[0]["image"][classifier]["roc_auc"] == pytest.approx(1 - before[0]["image"][classifier]["roc_auc"])


def test_it_applies_the_classifiers_evaluate_kept_whatever_params_say_now(trained, tmp_path, monkeypatch):
    """Nothing is refitted: with the SVM's and the operating point's parameters changed, every probability and
    threshold stays, and the figures name the classifiers they come from."""
    from ultrasound_transfer.outputs.provenance import file_sha256

    copy = tmp_path / "copy"
    for folder in ("data", "models", "metrics"):
        shutil.copytree(trained / folder, copy / folder)
    Project(copy).write_params(merged(merged(default_params(), TINY), {
        "svm": {"C_grid": [], "C": 100.0, "train_on": "training"}, "features": {"layer": "head"},
        "evaluation": {"operating_point": "specificity", "target": 0.99}}))
    monkeypatch.chdir(copy)
    external.main(["phantom", "phantom_site_b", "VGG16"])
    before, after = outputs(trained), outputs(Project(copy))
    scores = [c for c in before[1].columns if "_prob_" in c or c.endswith("_threshold")]
    assert np.array_equal(before[1][scores].to_numpy(), after[1][scores].to_numpy())
    assert after[0]["classifiers_sha256"] == file_sha256(copy / "models/phantom/VGG16/classifiers.json")
    assert after[0]["operating_point"] == "youden"           # the kept classifiers' rule, not today's params


def test_the_report_shows_the_gap_for_each_network_and_classifier(trained, monkeypatch):
    monkeypatch.chdir(trained.root)
    folds.main(["phantom_site_b"])
    for stage in (finetune, evaluate):
        stage.main(["phantom_site_b", "VGG16"])
    report.main([])
    text = (trained / "metrics/summary.md").read_text()
    section = text.split("## External validation")[1].split("## Primary comparison")[0]
    rows = [line for line in section.splitlines() if line.startswith(f"| {PAIR}")]
    assert len(rows) == 2 and "dense head" in rows[0] and "SVM" in rows[1]
    summary = json.loads((trained / "metrics/summary.json").read_text())
    per_split = pd.read_csv(trained / "metrics/cv/phantom/VGG16.folds.csv")
    internal = per_split.loc[per_split["classifier"] == "svm", "roc_auc"].mean()
    assert summary["external"][PAIR]["VGG16"]["gap"]["svm"]["internal_roc_auc"] == pytest.approx(internal)


def test_a_pair_not_in_params_or_of_other_classes_is_refused_before_any_network(trained, monkeypatch):
    monkeypatch.chdir(trained.root)
    assert not (trained / "models/phantom_site_b/ResNet50").exists()      # refused before its study is looked for
    with pytest.raises(PipelineError, match="not an entry of params external"):
        external.main(["phantom_site_b", "phantom", "ResNet50"])
    with pytest.raises(PipelineError, match=r"busi has classes \['benign', 'malignant', 'normal'\]"):
        external.check_classes("busi", "rodrigues", source_classes=["benign", "malignant", "normal"],
                               target_classes=["benign", "malignant"])


def test_a_site_shift_lowers_a_shortcut_reading_model_more_than_a_lesion_reading_one(trained, tmp_path):
    """Trained where every malignant frame is saved 25 % wider (letterboxed: thinner black bands), the SVM
    reads the bands; the second site saves every frame alike, and that model loses more than the one trained
    without the cue."""
    shortcut = train_and_read_externally(tmp_path, {"download": {"phantom": {"size_shortcut": 1.0}}})
    lesion_gap, shortcut_gap = (outputs(p)[0]["gap"]["svm"] for p in (trained, shortcut))
    assert shortcut_gap["internal_roc_auc"] > 0.95
    assert (shortcut_gap["external_minus_internal_roc_auc"]
            < lesion_gap["external_minus_internal_roc_auc"] - 0.15)


def test_a_pair_whose_datasets_share_images_is_refused(trained):
    source = pd.read_csv(trained / "data/prepared/phantom/manifest.csv")
    target = pd.read_csv(trained / "data/prepared/phantom_site_b/manifest.csv")
    external.check_no_shared_images("phantom", "phantom_site_b", source=source, target=target)     # none shared
    copied = target.copy()
    copied.loc[3, "sha256"] = source["sha256"].iloc[0]
    with pytest.raises(PipelineError, match=r"1 image\(s\) of phantom_site_b have the pixels of an image of phantom"):
        external.check_no_shared_images("phantom", "phantom_site_b", source=source, target=copied)


def test_each_split_read_on_its_own_test_fold_gives_evaluates_figures(trained, monkeypatch):
    """The external reading of a split, pointed at the training set's own test fold, is evaluate's reading of it:
    the same network, classifiers, calibration and threshold, so the gap compares like with like."""
    from ultrasound_transfer.evaluation.external_validation import gap_figures, split_reading_pooled
    from ultrasound_transfer.outputs.prepared import load_prepared
    from ultrasound_transfer.outputs.trained_study import load_trained_study
    from ultrasound_transfer.parameters import load_settings

    monkeypatch.chdir(trained.root)
    study, source = load_trained_study("phantom", "VGG16"), load_prepared("phantom")
    readings = external.read_splits(study.recipe, study.classifiers, source.images, settings=load_settings(),
                                    scratch_dir=trained.root / "models", tag="own")
    predictions = pd.read_csv(trained / "metrics/cv/phantom/VGG16.predictions.csv")
    per_split = pd.read_csv(trained / "metrics/cv/phantom/VGG16.folds.csv")
    position = {image_id: i for i, image_id in enumerate(source.manifest["id"])}
    groups = source.manifest["group"].to_numpy()
    for classifier, split_readings in readings.items():
        for k, reading in enumerate(split_readings, start=1):
            test = np.array([position[i] for i in predictions.loc[predictions["split"] == k, "id"]])
            pooled = split_reading_pooled(reading, labels=source.labels, groups=groups)
            figures = gap_figures(pooled, test, 10)
            row = per_split[(per_split["classifier"] == classifier) & (per_split["split"] == k)].iloc[0]
            for figure in ("roc_auc", "sensitivity", "specificity", "brier"):
                assert figures[figure] == pytest.approx(row[figure], abs=1e-5), (classifier, k, figure)


def test_a_pair_whose_datasets_share_a_near_copy_is_refused_where_identical_pixels_miss_it(trained, tmp_path,
                                                                                           monkeypatch):
    for folder in ("data",):
        shutil.copytree(trained / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    source = pd.read_csv(tmp_path / "data/prepared/phantom/manifest.csv")
    target = pd.read_csv(tmp_path / "data/prepared/phantom_site_b/manifest.csv")
    external.check_no_near_copies("phantom", "phantom_site_b", threshold_bits=18, source=source, target=target)
    prints_path = tmp_path / "data/prepared/phantom_site_b/fingerprints.npy"
    prints = np.load(prints_path)
    prints[5] = np.load(tmp_path / "data/prepared/phantom/fingerprints.npy")[2]     # re-saved, not identical
    prints[5, 0, 0] ^= 0b111                                                          # three bits apart
    np.save(prints_path, prints)
    with pytest.raises(PipelineError, match=r"1 image pair\(s\) of phantom_site_b and phantom are near-copies"):
        external.check_no_near_copies("phantom", "phantom_site_b", threshold_bits=18, source=source, target=target)
