import json

import numpy as np
import pandas as pd
import pytest

from stages import folds
from ultrasound_transfer.common import PipelineError


def toy_labels_groups(n_groups=30, per_group=3, seed=0):
    rng = np.random.default_rng(seed)
    group_labels = rng.integers(0, 2, n_groups)
    groups = np.repeat([f"g{i}" for i in range(n_groups)], per_group)
    labels = np.repeat(group_labels, per_group)
    return labels, groups


def test_folds_partition_keep_groups_whole_and_stratify():
    labels, groups = toy_labels_groups()
    test_folds = folds.stratified_group_folds(labels, groups, 5, seed=1)
    everything = np.sort(np.concatenate(test_folds))
    assert np.array_equal(everything, np.arange(len(labels)))
    for test in test_folds:
        train = np.setdiff1d(np.arange(len(labels)), test)
        assert not set(groups[test]) & set(groups[train])
        assert abs(labels[test].mean() - labels.mean()) < 0.2


def test_folds_are_deterministic_and_seeded():
    labels, groups = toy_labels_groups()
    a = folds.stratified_group_folds(labels, groups, 5, seed=1)
    b = folds.stratified_group_folds(labels, groups, 5, seed=1)
    c = folds.stratified_group_folds(labels, groups, 5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_repeats_are_new_splits_each_a_grouped_partition_and_the_first_is_the_plain_seeded_one(project):
    labels, groups = toy_labels_groups()
    write_manifest(project, "toy", labels, groups)
    project.write_params({"seed": 3, "cv": {"n_splits": 4, "grouping": "near", "repeats": 3}})
    folds.main(["toy"])
    record = json.loads((project / "data/folds/toy.json").read_text())
    assert record["repeats"] == 3 and len(record["folds"]) == 12
    assert [(f["repeat"], f["fold"]) for f in record["folds"]] == [(r, k) for r in (1, 2, 3) for k in (1, 2, 3, 4)]
    by_repeat = [[np.array(f["test_indices"]) for f in record["folds"] if f["repeat"] == r] for r in (1, 2, 3)]
    for split in by_repeat:
        assert np.array_equal(np.sort(np.concatenate(split)), np.arange(len(labels)))
        for test in split:
            assert not set(groups[test]) & set(groups[np.setdiff1d(np.arange(len(labels)), test)])
    first = folds.stratified_group_folds(labels, groups, 4, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(by_repeat[0], first))
    assert not all(np.array_equal(a, b) for a, b in zip(by_repeat[0], by_repeat[1]))
    # Another seed's second repeat is not this seed's first shifted along.
    assert folds.repeat_seed(3, 2) not in (3, 4) and folds.repeat_seed(3, 2) != folds.repeat_seed(4, 2)


def test_too_few_groups_of_a_class_is_an_error_naming_class_and_fix():
    labels = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array(["a", "b", "c", "d", "d", "e"])
    with pytest.raises(PipelineError, match=r"class 'malignant' has 2 groups.*lower cv.n_splits to at most 2"):
        folds.check_enough_groups(labels, groups, {0: "benign", 1: "malignant"}, n_splits=3, where="manifest.csv")


def write_manifest(project, dataset, labels, groups, exact_groups=None):
    path = project / "data" / "prepared" / dataset
    path.mkdir(parents=True)
    pd.DataFrame({"id": [f"{dataset}/{i}" for i in range(len(labels))], "label": labels,
                  "class_name": np.where(labels == 1, "malignant", "benign"), "group": groups,
                  "group_exact": groups if exact_groups is None else exact_groups}).to_csv(
        path / "manifest.csv", index=False)


def test_stage_writes_counts_and_fails_cleanly(project):
    labels, groups = toy_labels_groups()
    write_manifest(project, "toy", labels, groups)
    project.write_params({"seed": 3, "cv": {"n_splits": 4, "grouping": "near"}})
    folds.main(["toy"])
    record = json.loads((project / "data/folds/toy.json").read_text())
    assert record["n_splits"] == 4 and len(record["folds"]) == 4
    for fold in record["folds"]:
        test = np.array(fold["test_indices"])
        assert fold["test_counts"] == {"benign": int((labels[test] == 0).sum()),
                                       "malignant": int((labels[test] == 1).sum())}
        assert sum(fold["test_counts"].values()) + sum(fold["train_counts"].values()) == len(labels)

    assert record["grouping"] == "near" and record["groups"] == list(groups)
    project.write_params({"seed": 3, "cv": {"n_splits": 40, "grouping": "near"}})
    (project / "data/folds/toy.json").unlink()
    with pytest.raises(PipelineError, match="n_splits"):
        folds.main(["toy"])
    assert not list((project / "data/folds").iterdir())


def fold_of_each_image(record):
    fold_of = {}
    for k, fold in enumerate(record["folds"]):
        for i in fold["test_indices"]:
            fold_of[i] = k
    return np.array([fold_of[i] for i in range(record["n_images"])])


def test_grouping_modes_choose_what_may_not_straddle_folds(project):
    labels, near = toy_labels_groups(n_groups=20, per_group=4)
    exact = np.array([f"{g}-{i % 2}" for i, g in enumerate(near)])   # each near group = two exact groups
    write_manifest(project, "toy", labels, near, exact)
    seen = {}
    for grouping in ("near", "exact", "none"):
        project.write_params({"seed": 0, "cv": {"n_splits": 4, "grouping": grouping}})
        folds.main(["toy"])
        record = json.loads((project / "data/folds/toy.json").read_text())
        fold = fold_of_each_image(record)
        seen[grouping] = record
        groups = {"near": near, "exact": exact}.get(grouping)
        if groups is not None:
            assert all(len(set(fold[groups == g])) == 1 for g in np.unique(groups))
    assert seen["near"]["n_groups"] == 20 and seen["exact"]["n_groups"] == 40 and seen["none"]["n_groups"] == 80
    # Plain folds do split near groups: the leak that grouping prevents.
    fold = fold_of_each_image(seen["none"])
    assert any(len(set(fold[near == g])) > 1 for g in np.unique(near))


def test_unknown_grouping_is_rejected(project):
    labels, groups = toy_labels_groups()
    write_manifest(project, "toy", labels, groups)
    project.write_params({"seed": 0, "cv": {"n_splits": 4, "grouping": "patients"}})
    with pytest.raises(PipelineError, match="cv.grouping = 'patients': must be one of near, exact, none"):
        folds.main(["toy"])


def test_inner_splits_that_cannot_be_made_are_refused_at_folds_before_any_training(project):
    labels, groups = toy_labels_groups()
    write_manifest(project, "toy", labels, groups)
    project.write_params({"seed": 3, "cv": {"n_splits": 4, "grouping": "near"},
                          "svm": {"inner_folds": 12, "C_grid": [0.1, 1.0], "C_selection": "inner"}})
    with pytest.raises(PipelineError, match=r"repeat 1 fold 1: the SVM's training images hold \d+ groups of class "
                                            r"'\w+', fewer than svm.inner_folds = 12 for choosing C; "
                                            r"lower svm.inner_folds to \d+, or lower cv.n_splits, or set svm.C_grid"):
        folds.main(["toy"])
    assert not (project / "data/folds/toy.json").exists()
    project.write_params({"seed": 3, "cv": {"n_splits": 4, "grouping": "near"},
                          "svm": {"inner_folds": 12, "C_grid": []}})
    folds.main(["toy"])      # a fixed C needs no inner folds
    assert (project / "data/folds/toy.json").exists()
    project.write_params({"seed": 3, "cv": {"n_splits": 4, "grouping": "near"},
                          "svm": {"inner_folds": 12, "C_grid": [0.1, 1.0], "C_selection": "validation"}})
    folds.main(["toy"])      # nor does a C chosen on the validation images


def test_official_folds_are_busbras_published_partition_and_a_split_group_is_refused(project):
    from stages import normalize
    from tests import miniatures

    miniatures.make_busbra(project / "data/raw/busbra", patients=20)
    project.write_params({"datasets": ["busbra"], "image_size": 40, "models": ["VGG16"],
                          "cv": {"n_splits": 5, "folds": "official", "grouping": "exact"}})
    normalize.main(["busbra"])
    folds.main(["busbra"])
    record = json.loads((project / "data/folds/busbra.json").read_text())
    manifest = pd.read_csv(project / "data/prepared/busbra/manifest.csv")
    assert record["folds_from"] == "official"
    for entry in record["folds"]:
        assert set(manifest.loc[entry["test_indices"], "official_fold_5"]) == {entry["fold"]}
    # An image filed under two patients in two official folds: one group over two test folds, refused.
    images = project / "data/raw/busbra/BUSBRA/Images"
    (images / "bus_0002-s.png").write_bytes((images / "bus_0001-l.png").read_bytes())
    normalize.main(["busbra"])
    with pytest.raises(PipelineError, match=r"the official partition splits 1 group\(s\) of cv.grouping = exact"):
        folds.main(["busbra"])
