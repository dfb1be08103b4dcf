"""The evaluate stage on planted features: no test image reaches the SVM, ids stay aligned, signs are right."""

import json

import numpy as np
import pandas as pd
import pytest

from stages import evaluate
from tests.conftest import default_params
from ultrasound_transfer.common import PipelineError

N, FOLDS = 60, 3
RNG = np.random.default_rng(0)


def toy_project(project, features_of, shuffle_manifest=True, svm=None) -> pd.DataFrame:
    """A dataset of 60 images (30 patients x 2), its folds, the dense head's outputs and planted features.

    ``features_of(manifest, parts, fold)`` returns the features (N, D) of one fold in manifest order.
    Returns the manifest.
    """
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
    fold_of_patient = RNG.permutation(np.arange(N // 2) % FOLDS)
    fold_of = fold_of_patient[[int(g[1:]) for g in manifest["group"]]]
    folds = [np.flatnonzero(fold_of == k) for k in range(FOLDS)]
    (project / "data/folds").mkdir(parents=True)
    (project / "data/folds/phantom.json").write_text(json.dumps({
        "n_images": N, "groups": list(manifest["group"]),
        "folds": [{"test_indices": f.tolist()} for f in folds]}))

    training = project / "models/phantom/M/training"
    training.mkdir(parents=True)
    parts, dense = [], []
    for k, test in enumerate(folds, start=1):
        train = np.setdiff1d(np.arange(N), test)
        train_groups = manifest["group"].to_numpy()[train]
        val = train[np.isin(train_groups, np.unique(train_groups)[::4])]     # a quarter of the patients
        for part, rows in (("fit", np.setdiff1d(train, val)), ("validation", val), ("test", test)):
            parts.append(pd.DataFrame({"id": manifest["id"].to_numpy()[rows], "fold": k, "part": part}))
        truth = manifest["label"].to_numpy()[test]
        dense.append(pd.DataFrame({"id": manifest["id"].to_numpy()[test], "fold": k, "true": truth,
                                   "prob_benign": np.where(truth == 1, 0.2, 0.8),
                                   "prob_malignant": np.where(truth == 1, 0.8, 0.2)}))
    parts = pd.concat(parts, ignore_index=True)
    parts.to_csv(training / "fold_parts.csv", index=False)
    pd.concat(dense).sample(frac=1, random_state=2).to_csv(training / "dense_predictions.csv", index=False)
    (training / "freezing.json").write_text(json.dumps({"folds": [
        {"total_layers": 10, "trained_layers": 2, "trainable_params": 5}]}))
    (project / "data/features/phantom/M").mkdir(parents=True)
    for k in range(1, FOLDS + 1):
        np.savez(project / f"data/features/phantom/M/fold{k}.npz", features=features_of(manifest, parts, k),
                 ids=manifest["id"].to_numpy())
    params = default_params()
    params["svm"].update({"C_grid": [0.01, 0.1, 1.0], "inner_folds": 2, **(svm or {})})
    project.write_params(params)
    return manifest


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
    assert metrics["svm"]["accuracy"] < 0.75


def test_the_same_leak_in_training_images_is_learned_so_the_test_above_can_fail(project):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() * 5.0))
    evaluate.main(["phantom", "M"])
    assert results(project)[0]["svm"]["accuracy"] == 1.0


@pytest.mark.parametrize("train_on, learns_it", [("fit", False), ("training", True)])
def test_the_svm_learns_from_the_dense_heads_fit_images_unless_told_otherwise(project, train_on, learns_it):
    # The label is visible (+-5) in validation and test images only, 0 in fit images: only an SVM
    # that trains on validation images can learn it.
    sign = lambda m: 2.0 * m["label"].to_numpy() - 1  # noqa: E731
    toy_project(project, lambda m, parts, k: noise_plus(sign(m) * 5.0 * ~rows_of(m, parts, k, "fit")),
                svm={"train_on": train_on})
    evaluate.main(["phantom", "M"])
    metrics, per_fold, _ = results(project)
    assert (metrics["svm"]["accuracy"] > 0.9) == learns_it and (metrics["svm"]["accuracy"] < 0.75) != learns_it
    dense, svm = (per_fold[per_fold["classifier"] == c].set_index("fold")["n_train"] for c in ("dense", "svm"))
    assert (dense == svm).all() == (train_on == "fit") and (svm >= dense).all()
    assert metrics["svm_train_on"] == train_on


def test_ids_stay_aligned_across_a_shuffled_manifest_features_and_dense_predictions(project):
    manifest = toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() * 5.0))
    evaluate.main(["phantom", "M"])
    metrics, _, predictions = results(project)
    assert metrics["dense"]["accuracy"] == 1.0      # the planted dense outputs are right only if matched by id
    truth = manifest.set_index("id")["class_name"]
    assert (predictions["true_class"] == truth.loc[predictions["id"]].to_numpy()).all()
    assert sorted(predictions["id"]) == sorted(manifest["id"])        # every image tested exactly once


def test_features_out_of_manifest_order_are_refused(project):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy()))
    stored = np.load(project / "data/features/phantom/M/fold2.npz", allow_pickle=True)
    np.savez(project / "data/features/phantom/M/fold2.npz", features=stored["features"], ids=stored["ids"][::-1])
    with pytest.raises(PipelineError, match="not in the order of the manifest"):
        evaluate.main(["phantom", "M"])


def test_a_higher_malignant_score_means_malignant(project):
    toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() + RNG.normal(0, 0.3, N)))
    evaluate.main(["phantom", "M"])
    metrics, _, predictions = results(project)
    assert ((predictions["svm_score_malignant"] > 0) == (predictions["svm_class"] == "malignant")).all()
    assert metrics["svm"]["roc_auc"] > 0.9 and metrics["svm"]["sensitivity"] > 0.8
