"""The evaluate stage on planted features: no test image reaches the SVM, ids stay aligned, signs are right."""

import json

import numpy as np
import pandas as pd
import pytest

from stages import evaluate
from tests.conftest import default_params
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.grouping import inner_validation_split

N, FOLDS = 60, 3
RNG = np.random.default_rng(0)


def planted_dense(truth: np.ndarray, part: str) -> np.ndarray:
    """The dense head's probability of malignant: right at 0.5 on every image."""
    return np.where(truth == 1, 0.8, 0.2)


def toy_project(project, features_of, shuffle_manifest=True, svm=None, dense_of=planted_dense,
                evaluation=None, repeats=1) -> pd.DataFrame:
    """A dataset of 60 images (30 patients x 2), its folds (``repeats`` times), the dense head's outputs and
    planted features.

    ``features_of(manifest, parts, fold)`` returns the features (N, D) of one fold in manifest order;
    ``dense_of(truth, part)`` the dense head's probability of malignant of a fold's test or validation images.
    Returns the manifest.
    """
    global RNG
    RNG = np.random.default_rng(0)      # every test draws the same, whatever ran before it (any order)
    patients = np.repeat(np.arange(N // 2), 2)
    labels = patients % 2
    manifest = pd.DataFrame({"id": [f"phantom/img{i:02d}.png" for i in range(N)], "source": "x", "label": labels,
                             "class_name": np.where(labels == 1, "malignant", "benign"),
                             "group": [f"p{p}" for p in patients], "group_exact": [f"p{p}" for p in patients],
                             "case": [f"p{p}" for p in patients]})
    if shuffle_manifest:
        manifest = manifest.sample(frac=1, random_state=1).reset_index(drop=True)
    (project / "data/prepared/phantom").mkdir(parents=True)
    manifest.to_csv(project / "data/prepared/phantom/manifest.csv", index=False)
    folds, names = [], []
    for repeat in range(1, repeats + 1):
        fold_of_patient = RNG.permutation(np.arange(N // 2) % FOLDS)
        fold_of = fold_of_patient[[int(g[1:]) for g in manifest["group"]]]
        folds += [np.flatnonzero(fold_of == k) for k in range(FOLDS)]
        names += [(repeat, k) for k in range(1, FOLDS + 1)]
    (project / "data/folds").mkdir(parents=True)
    (project / "data/folds/phantom.json").write_text(json.dumps({
        "n_images": N, "n_splits": FOLDS, "repeats": repeats, "grouping": "near", "groups": list(manifest["group"]),
        "folds": [{"repeat": r, "fold": k, "test_indices": f.tolist()} for (r, k), f in zip(names, folds)]}))

    training = project / "models/phantom/M/training"
    training.mkdir(parents=True)
    parts, dense = [], []
    for k, test in enumerate(folds, start=1):
        train = np.setdiff1d(np.arange(N), test)
        _, val = inner_validation_split(manifest["label"].to_numpy()[train], manifest["group"].to_numpy()[train],
                                        0.25, seed=k)
        val = train[val]
        for part, rows in (("fit", np.setdiff1d(train, val)), ("validation", val), ("test", test)):
            parts.append(pd.DataFrame({"id": manifest["id"].to_numpy()[rows], "fold": k, "part": part}))
        for part, rows in (("test", test), ("validation", val)):
            truth = manifest["label"].to_numpy()[rows]
            malignant = dense_of(truth, part)
            dense.append(pd.DataFrame({"id": manifest["id"].to_numpy()[rows], "fold": k, "part": part, "true": truth,
                                       "prob_benign": 1 - malignant, "prob_malignant": malignant}))
    parts = pd.concat(parts, ignore_index=True)
    parts.to_csv(training / "fold_parts.csv", index=False)
    pd.concat(dense).sample(frac=1, random_state=2).to_csv(training / "dense_predictions.csv", index=False)
    (training / "freezing.json").write_text(json.dumps({"folds": [
        {"total_layers": 10, "trained_layers": 2, "trainable_params": 5}]}))
    write_toy_recipe(training, n_splits=len(folds))
    (project / "data/features/phantom/M").mkdir(parents=True)
    for k in range(1, len(folds) + 1):
        np.savez(project / f"data/features/phantom/M/fold{k}.npz", pooled=features_of(manifest, parts, k),
                 ids=manifest["id"].to_numpy(dtype=str))
    params = default_params()
    params["svm"].update({"C_grid": [0.01, 0.1, 1.0], "inner_folds": 2, **(svm or {})})
    params["evaluation"].update({"bootstrap_resamples": 200, **(evaluation or {})})
    project.write_params(params)
    return manifest


def write_toy_recipe(training, *, n_splits: int) -> None:
    """training/network.json of a network that is not built here: evaluate reads its facts and records its hash."""
    from ultrasound_transfer.outputs.prepared import Preprocessing
    from ultrasound_transfer.outputs.training_record import NetworkRecipe
    from ultrasound_transfer.settings import HeadSettings

    recipe = NetworkRecipe(dataset="phantom", model="M", class_names=("benign", "malignant"),
                           preprocessing=Preprocessing(32, "letterbox", "BT.601"), weights="none", ft_fraction=0.15,
                           head=HeadSettings(8, 0.5, "standardize"), batch_norm="inference", precision="float32",
                           seed=42, deterministic_ops=True, frozen_sha256="0" * 64, fold_sha256=("0" * 64,) * n_splits,
                           backend="tensorflow", keras="3", provenance={"params": {"finetune": {"epochs": 9}}})
    (training / "network.json").write_text(json.dumps(recipe.as_dict()))


def noise_plus(column: np.ndarray) -> np.ndarray:
    return np.column_stack([RNG.normal(size=(N, 5)), column])


def rows_of(manifest, parts, fold, *names) -> np.ndarray:
    chosen = parts.loc[(parts["fold"] == fold) & parts["part"].isin(names), "id"]
    return np.isin(manifest["id"], chosen)


def results(project) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    out = project / "metrics/cv/phantom"
    return (json.loads((out / "M.json").read_text()), pd.read_csv(out / "M.folds.csv"),
            pd.read_csv(out / "M.predictions.csv"))


def test_a_feature_that_gives_the_label_away_only_in_test_images_is_never_learned(project):
    # Fit rows see 0; test rows see the label. Any test image in the scaler, the C search or the fit
    # would make this feature decisive.
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() * rows_of(m, parts, k, "test") * 5.0))
    evaluate.main(["phantom", "M"])
    metrics, _, _ = results(project)
    assert metrics["folds"]["svm"]["argmax_accuracy"] < 0.75 and metrics["image"]["svm"]["roc_auc"] < 0.75


def test_the_same_leak_in_training_images_is_learned_so_the_test_above_can_fail(project):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() * 5.0))
    evaluate.main(["phantom", "M"])
    metrics = results(project)[0]
    assert metrics["folds"]["svm"]["argmax_accuracy"] == 1.0 and metrics["image"]["svm"]["roc_auc"] == 1.0


@pytest.mark.parametrize("train_on, learns_it", [("fit", False), ("training", True)])
def test_the_svm_learns_from_the_dense_heads_fit_images_unless_told_otherwise(project, train_on, learns_it):
    # The label is visible (+-5) in validation and test images only, 0 in fit images: only an SVM
    # that trains on validation images can learn it.
    sign = lambda m: 2.0 * m["label"].to_numpy() - 1  # noqa: E731
    toy_project(project, lambda m, parts, k: noise_plus(sign(m) * 5.0 * ~rows_of(m, parts, k, "fit")),
                svm={"train_on": train_on, "C_selection": "validation" if train_on == "fit" else "inner"})
    evaluate.main(["phantom", "M"])
    metrics, per_fold, _ = results(project)
    accuracy = metrics["folds"]["svm"]["argmax_accuracy"]
    assert (accuracy > 0.9) == learns_it and (accuracy < 0.75) != learns_it
    dense, svm = (per_fold[per_fold["classifier"] == c].set_index("fold")["n_train"] for c in ("dense", "svm"))
    assert (dense == svm).all() == (train_on == "fit") and (svm >= dense).all()
    assert metrics["svm_train_on"] == train_on


def test_ids_stay_aligned_across_a_shuffled_manifest_features_and_dense_predictions(project):
    manifest = toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() * 5.0))
    evaluate.main(["phantom", "M"])
    metrics, _, predictions = results(project)
    assert metrics["folds"]["dense"]["argmax_accuracy"] == 1.0    # the planted outputs are right only if matched by id
    assert metrics["image"]["dense"]["accuracy"] == 1.0
    truth = manifest.set_index("id")["class_name"]
    assert (predictions["true_class"] == truth.loc[predictions["id"]].to_numpy()).all()
    assert sorted(predictions["id"]) == sorted(manifest["id"])        # every image tested exactly once


def test_features_out_of_manifest_order_are_refused(project):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy()))
    stored = dict(np.load(project / "data/features/phantom/M/fold2.npz"))
    np.savez(project / "data/features/phantom/M/fold2.npz", pooled=stored["pooled"], ids=stored["ids"][::-1])
    with pytest.raises(PipelineError, match="not in the order of the manifest.*dvc repro finetune@phantom-M"):
        evaluate.main(["phantom", "M"])
    # A file from before finetune wrote both layers: named, with the command that rewrites it.
    np.savez(project / "data/features/phantom/M/fold2.npz", features=stored["pooled"], ids=stored["ids"])
    with pytest.raises(PipelineError, match=r"fold2.npz holds no 'pooled' features \(it has features, ids\); "
                                            r"it was written by an older finetune: run 'dvc repro finetune@phantom-M'"):
        evaluate.main(["phantom", "M"])


def test_a_higher_malignant_score_means_malignant(project):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() + RNG.normal(0, 0.3, N)))
    evaluate.main(["phantom", "M"])
    metrics, per_fold, predictions = results(project)
    called = predictions["svm_prob_malignant"] >= predictions["svm_threshold"]
    assert (called == (predictions["svm_class"] == "malignant")).all()
    assert metrics["image"]["svm"]["roc_auc"] > 0.9 and metrics["image"]["svm"]["sensitivity"] > 0.8
    assert metrics["folds"]["svm"]["roc_auc"] > 0.9
    assert set(per_fold[["repeat", "fold", "split"]].itertuples(index=False)) == {(1, k, k) for k in (1, 2, 3)}


def test_the_operating_point_never_looks_at_test_labels(project):
    # Test images of benign patients score 0.6, validation ones 0.2; malignant 0.8 everywhere. A threshold
    # chosen on the validation images (between 0.2 and 0.8) calls every test benign image malignant; one
    # chosen on the test images would sit between 0.6 and 0.8 and call none.
    shifted = lambda truth, part: np.where(truth == 1, 0.8, 0.6 if part == "test" else 0.2)  # noqa: E731
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy()), dense_of=shifted)
    evaluate.main(["phantom", "M"])
    metrics, per_fold, predictions = results(project)
    dense = per_fold[per_fold["classifier"] == "dense"]
    assert (dense["threshold"] < 0.6).all() and (dense["specificity"] == 0).all()
    assert metrics["image"]["dense"]["specificity"] == 0 and metrics["image"]["dense"]["roc_auc"] == 1.0
    assert (dense["argmax_specificity"] == 0).all()     # argmax reads 0.6 as malignant too


@pytest.mark.parametrize("rule, reaches", [("sensitivity", "sensitivity"), ("specificity", "specificity")])
def test_the_operating_point_rule_reaches_its_target_on_validation_images(project, rule, reaches):
    # The classes overlap widely, so where the threshold sits decides which of the two rates is high.
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() + RNG.normal(0, 1.0, N)),
                dense_of=lambda truth, part: np.clip(0.3 * truth + RNG.uniform(0.1, 0.9, len(truth)), 0, 1),
                evaluation={"operating_point": rule, "target": 1.0})
    evaluate.main(["phantom", "M"])
    metrics, per_fold, _ = results(project)
    assert metrics["operating_point"] == rule
    other = {"sensitivity": "specificity", "specificity": "sensitivity"}[reaches]
    assert metrics["image"]["dense"][reaches] > metrics["image"]["dense"][other]


def test_case_level_figures_come_with_intervals_over_groups(project):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() + RNG.normal(0, 1.0, N)))
    evaluate.main(["phantom", "M"])
    metrics, _, _ = results(project)
    case = metrics["case"]["svm"]
    assert case["roc_auc_ci_low"] <= case["roc_auc"] <= case["roc_auc_ci_high"]
    assert metrics["case"]["cases_with_mixed_labels"] == 0
    assert metrics["data"] == {"images": 60, "groups": 30, "cases": 30, "cases_with_several_images": 30,
                               "images_benign": 30, "images_malignant": 30}
    assert (project / "metrics/plots/calibration/phantom/M.csv").exists()


@pytest.mark.parametrize("grouping, case_units", [("exact", 30), ("none", None)])
def test_the_case_unit_is_what_the_folds_keep_together(project, grouping, case_units):
    # Near-copies joined across patients p0+p2, p1+p3, ... in the manifest's group, while the folds kept only
    # patients together (cv.grouping: exact): the joined units straddle test folds, the patients do not.
    manifest = toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() + RNG.normal(0, 1.0, N)))
    patient = manifest["group_exact"].str[1:].astype(int)
    manifest["group"] = "n" + (patient // 4 * 4 + patient % 2).astype(str)
    manifest.to_csv(project / "data/prepared/phantom/manifest.csv", index=False)
    record_path = project / "data/folds/phantom.json"
    record = json.loads(record_path.read_text())
    record["grouping"] = grouping
    record["groups"] = list(manifest["group_exact"]) if grouping == "exact" else list(manifest["id"])
    record_path.write_text(json.dumps(record))
    evaluate.main(["phantom", "M"])
    metrics, _, _ = results(project)
    if case_units is None:
        assert "case" not in metrics
    else:
        svm = metrics["case"]["svm"]
        assert svm["tp"] + svm["fp"] + svm["tn"] + svm["fn"] == case_units


@pytest.mark.parametrize("train_on", ["fit", "training"])
def test_the_argmax_operating_point_reads_both_classifiers_as_the_paper_does(project, train_on):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() + RNG.normal(0, 1.0, N)),
                dense_of=lambda truth, part: np.clip(0.5 * truth + RNG.uniform(0.1, 0.6, len(truth)), 0, 1),
                svm={"train_on": train_on, "C_selection": "validation" if train_on == "fit" else "inner"},
                evaluation={"operating_point": "argmax"})
    evaluate.main(["phantom", "M"])
    metrics, per_fold, predictions = results(project)
    for classifier in ("dense", "svm"):
        assert (predictions[f"{classifier}_class"] == predictions[f"{classifier}_argmax_class"]).all()
        folds = metrics["folds"][classifier]
        assert folds["accuracy"] == pytest.approx(folds["argmax_accuracy"])
    # The raw softmax at 0.5; its Platt-scaled reading at the probability the map gives log-odds 0: the same call.
    assert (predictions["dense_raw_threshold"] == 0.5).all()
    assert (predictions["dense_class"] == predictions["dense_raw_class"]).all()


def test_repeats_give_every_image_one_test_prediction_per_repeat_and_figures_averaged_over_them(project):
    manifest = toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() + RNG.normal(0, 1.0, N)),
                           repeats=2)
    evaluate.main(["phantom", "M"])
    metrics, per_fold, predictions = results(project)
    assert metrics["repeats"] == 2 and metrics["splits"] == 6
    assert sorted(set(per_fold[["repeat", "fold"]].itertuples(index=False))) == [(r, k) for r in (1, 2)
                                                                                  for k in (1, 2, 3)]
    assert predictions.groupby("id")["repeat"].agg(lambda r: sorted(r) == [1, 2]).all()
    assert predictions["id"].nunique() == N
    # The pooled figure is the mean of each repeat's pooled figure.
    from sklearn.metrics import roc_auc_score
    per_repeat = [roc_auc_score(part["true"], part["svm_prob_malignant"]) for _, part in predictions.groupby("repeat")]
    assert metrics["image"]["svm"]["roc_auc"] == pytest.approx(np.mean(per_repeat))
    case_auc = metrics["case"]["svm"]["roc_auc"]
    assert len(manifest) == N and 0 <= case_auc <= 1          # a NaN or a missing figure fails here


def test_the_kept_classifiers_reproduce_the_recorded_predictions_exactly(project):
    """classifiers.json is what evaluate fitted: loaded back, each split's SVM, Platt scaling and thresholds give
    the recorded probabilities and calls bit for bit, from the features alone."""
    from ultrasound_transfer.outputs.classifiers import load_classifiers
    from ultrasound_transfer.outputs.features import load_fold_features

    manifest = toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() + RNG.normal(0, 1.0, N)),
                           repeats=2)
    evaluate.main(["phantom", "M"])
    _, per_fold, predictions = results(project)
    kept = load_classifiers("phantom", "M")
    ids = manifest["id"].to_numpy()
    assert [s.k for s in kept.splits] == list(range(1, 7)) and kept.feature_layer == "pooled"
    for split in kept.splits:
        rows = predictions[predictions["split"] == split.k]
        position = {image_id: i for i, image_id in enumerate(ids)}
        features = load_fold_features("phantom", "M", split.k, ids=ids, layer="pooled")[
            [position[i] for i in rows["id"]]]
        svm = split.svm.read(features)
        np.testing.assert_array_equal(svm.probabilities[:, 1], rows["svm_prob_malignant"].to_numpy())
        assert (rows["svm_threshold"] == split.svm.threshold).all()
        assert (rows["dense_threshold"] == split.dense.threshold).all()
        assert list(np.where(svm.called == 1, "malignant", "benign")) == list(rows["svm_class"])
        assert per_fold.loc[(per_fold["split"] == split.k) & (per_fold["classifier"] == "svm"), "svm_C"].item() \
            == split.svm.model.named_steps["linearsvc"].C
        assert split.novelty.median > 0 and (split.novelty.scale > 0).all()
    assert kept.novelty_threshold > 1                  # above the held-out images' typical novelty, by construction


def test_a_planted_miscalibration_of_the_dense_head_is_corrected_and_the_raw_one_kept_beside(project):
    """The head's softmax far too confident (three times the log-odds it should have): Platt scaling on the
    validation images (ten a split here) brings its intercept to 0, its slope nearer 1 and its calibration error
    down; the raw reading is kept, labelled."""
    def overconfident(truth: np.ndarray, part: str) -> np.ndarray:
        score = (2 * truth - 1) * 0.8 + RNG.normal(0, 1.0, len(truth))
        return 1 / (1 + np.exp(-5 * score))

    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy()), dense_of=overconfident, repeats=3)
    evaluate.main(["phantom", "M"])
    metrics, _, predictions = results(project)
    calibrated, raw = metrics["image"]["dense"], metrics["image"]["dense_raw"]
    assert raw["calibration_slope"] < 0.5 and abs(np.log(calibrated["calibration_slope"])) < abs(np.log(
        raw["calibration_slope"]))
    assert abs(calibrated["calibration_intercept"]) < 0.2 < abs(raw["calibration_intercept"])
    assert calibrated["calibration_error_debiased"] < raw["calibration_error_debiased"] - 0.02
    # The ranking within a split is the raw one: per-split ROC-AUC does not move, only what pooling and
    # probabilities see.
    for split, rows in predictions.groupby("split"):
        order = np.argsort(rows["dense_raw_prob_malignant"].to_numpy(), kind="stable")
        assert np.all(np.diff(rows["dense_prob_malignant"].to_numpy()[order]) >= -1e-12), split
    assert metrics["run"]["dense_calibration"] == "platt" and metrics["run"]["epochs"] == 9


def test_without_calibration_the_dense_head_reads_its_raw_softmax_as_the_paper_did(project):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy()),
                evaluation={"dense_calibration": "none"})
    evaluate.main(["phantom", "M"])
    metrics, _, predictions = results(project)
    assert "dense_raw" not in metrics["image"] and "dense_raw_prob_malignant" not in predictions
    assert set(predictions["dense_prob_malignant"]) <= {0.2, 0.8}      # planted_dense's raw values


def test_the_svms_c_is_chosen_on_the_validation_images_where_the_network_did_not_learn(project):
    """A feature that tells the label on the fit images only (where the network trained) and is noise on the
    validation and test images: C chosen on the validation images leans away from it; an inner CV on the fit
    images cannot see the difference and trusts it."""
    def leak_in_fit(m, parts, k):
        fit = rows_of(m, parts, k, "fit")
        leak = np.where(fit, m["label"].to_numpy() * 3.0, RNG.normal(0, 1.0, len(m)))
        signal = m["label"].to_numpy() + RNG.normal(0, 1.0, len(m))
        return np.column_stack([RNG.normal(size=(len(m), 3)), leak, signal])

    toy_project(project, leak_in_fit, svm={"C_grid": [0.001, 0.01, 0.1, 1.0, 10.0]})
    evaluate.main(["phantom", "M"])
    on_validation, _, _ = results(project)
    toy_project_again = project.root / "again"
    toy_project_again.mkdir()
    import os

    os.chdir(toy_project_again)
    from tests.conftest import Project

    toy_project(Project(toy_project_again), leak_in_fit, svm={"C_grid": [0.001, 0.01, 0.1, 1.0, 10.0],
                                                               "C_selection": "inner"})
    evaluate.main(["phantom", "M"])
    by_inner, _, _ = results(Project(toy_project_again))
    assert on_validation["image"]["svm"]["roc_auc"] > by_inner["image"]["svm"]["roc_auc"]
