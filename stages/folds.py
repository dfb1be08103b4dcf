"""Stage ``folds``: seeded stratified, grouped K-fold splits of one dataset, ``cv.repeats`` times.

Usage: ``python -m stages.folds DATASET``.  Reads params ``seed`` and ``cv``, and
``finetune.validation_fraction`` and ``svm`` to refuse, before any training,
folds whose inner splits could not be made (:func:`check_inner_splits`).

Each repeat is a new split of the same images (repeated cross-validation;
Bouckaert & Frank, PAKDD 2004): repeat 1 is seeded by ``seed`` itself, repeat
r > 1 by a seed derived from (``seed``, r) (:func:`repeat_seed`), so that
experiments with other seeds get other splits, not shifted copies.

``cv.grouping`` says what must stay on one side of every split
(``ultrasound_transfer.choices.GROUPING_MEANS``): ``near``, the default, keeps
patients, identical pixels and near-duplicates (see ``normalize``) together;
``none`` is plain stratified K-fold, the leaky protocol of most published
work, kept for measuring how much it inflates the scores.  ``cv.folds:
official`` takes a dataset's published patient-level partition instead
(BUS-BRA's 5 or 10 folds, kept by ``normalize`` in the manifest), refused
where it would split a group (:func:`official_folds`).

Output ``data/folds/<dataset>.json`` records the grouping, the group of every
image (used again by the inner splits of ``finetune`` and ``evaluate``), and
under ``folds`` one entry per fold of every repeat, in order (repeat 1's
folds, then repeat 2's...): its ``repeat``, its ``fold`` within the repeat,
its test indices (rows of ``data/prepared/<dataset>/manifest.csv``) and class
counts.  The later stages number these entries 1, 2, ... (``split``; the
``fold<k>`` of their file names), so with one repeat split k is fold k.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ultrasound_transfer.common import PipelineError, log, parse_args, run_stage
from ultrasound_transfer.data.grouping import fewest_groups_per_class, inner_validation_split
from ultrasound_transfer.outputs import prepared
from ultrasound_transfer.outputs.folds import write_record
from ultrasound_transfer.outputs.prepared import load_manifest
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.settings import Settings


def check_enough_groups(labels: np.ndarray, groups: np.ndarray, class_names: dict[int, str], *, n_splits: int,
                        where: str) -> None:
    """Fail unless every class has at least ``n_splits`` groups.

    With fewer, some test fold would hold no image of that class and its
    recall would be undefined.
    """
    label, n_groups = fewest_groups_per_class(labels, groups)
    if n_groups < n_splits:
        raise PipelineError(
            f"{where}: class '{class_names[label]}' has {n_groups} groups (patients/cases) "
            f"but {n_splits} folds were asked for; lower cv.n_splits to at most {n_groups} "
            "or add data for that class."
        )


# The manifest column of each cv.grouping (ultrasound_transfer.choices.GROUPINGS); none: every image its own group.
GROUP_COLUMNS = {"near": "group", "exact": "group_exact", "none": None}


def groups_for(manifest, grouping: str) -> np.ndarray:
    """The group of each image under ``cv.grouping``; with ``none`` every image is its own."""
    column = GROUP_COLUMNS[grouping]
    if column is None:
        return np.array([f"image{i}" for i in range(len(manifest))])
    if column not in manifest.columns:
        raise PipelineError(f"the manifest has no '{column}' column for cv.grouping = {grouping}; "
                            "rerun 'dvc repro normalize'.")
    return manifest[column].astype(str).to_numpy()


def stratified_group_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[np.ndarray]:
    """Test indices of each fold of a seeded ``StratifiedGroupKFold``."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    dummy = np.zeros(len(labels))
    return [np.sort(test) for _, test in splitter.split(dummy, labels, groups)]


def official_folds(manifest, *, n_splits: int, groups: np.ndarray, grouping: str, where: str) -> list[np.ndarray]:
    """Test indices of each fold of the dataset's official ``n_splits``-fold partition (``cv.folds: official``).

    The partition keeps patients apart; a group of ``cv.grouping`` that it
    splits (near-copies of different patients, identical pixels filed twice)
    would put one group in two test folds, which the case level and the inner
    splits assume cannot happen, so it is refused rather than regrouped.
    """
    column = prepared.official_fold_column(n_splits)
    if column not in manifest.columns or manifest[column].isna().any():
        raise PipelineError(f"{where}: no official {n_splits}-fold partition for every image (column {column}): the "
                            "dataset publishes none of that size, or its partition file was missing when normalize "
                            "read it (BUS-BRA: 5-fold-cv.csv beside bus_data.csv); place it and rerun normalize, or "
                            "run dvc exp run -S cv.folds=seeded.")
    fold_of = manifest[column].to_numpy(dtype=int)
    if set(fold_of) != set(range(1, n_splits + 1)):
        raise PipelineError(f"{where}: the official partition numbers its folds {sorted(set(fold_of))}, not 1 to "
                            f"{n_splits}; replace the dataset's partition file with the published one.")
    split = [len(set(fold_of[groups == group])) > 1 for group in np.unique(groups)]
    if any(split):
        fixes = ("run dvc exp run -S cv.grouping=exact (identical pixels only), or -S cv.folds=seeded"
                 if grouping == "near" else "run dvc exp run -S cv.folds=seeded")
        raise PipelineError(f"{where}: the official partition splits {sum(split)} group(s) of cv.grouping = "
                            f"{grouping} (near-copies or identical pixels across its patients) over two test folds; "
                            f"{fixes}.")
    return [np.flatnonzero(fold_of == k) for k in range(1, n_splits + 1)]


def repeat_seed(seed: int, repeat: int) -> int:
    """The split seed of ``repeat`` (1-based): ``seed`` for the first, one drawn from (seed, repeat) after."""
    if repeat == 1:
        return seed
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0])


def check_every_class_tested(folds: list[np.ndarray], labels: np.ndarray, class_names: dict[int, str],
                             seed: int, repeat: int = 1) -> None:
    """Fail if a test fold lacks a class (its recall and AUC would be undefined)."""
    for k, test in enumerate(folds, start=1):
        missing = set(class_names) - set(labels[test].tolist())
        if missing:
            raise PipelineError(
                f"with seed = {seed}, test fold {k} of repeat {repeat} holds no image of class "
                f"{', '.join(class_names[m] for m in sorted(missing))}; lower cv.n_splits or change seed."
            )


def check_inner_splits(labels: np.ndarray, groups: np.ndarray, splits: list[dict], class_names: dict[int, str],
                       settings: Settings) -> None:
    """Fail now, not after a network is built, if an inner split cannot be made in some split's training part.

    Draws each split's inner validation part exactly as ``finetune`` will
    (same function, same seed), then checks that the part the SVM learns from
    has at least ``svm.inner_folds`` groups of every class for its C search
    (and its calibration, where that uses inner folds).
    """
    fraction, svm = settings.finetune.validation_fraction, settings.svm
    # Platt scaling on out-of-inner-fold decision values (two classes only) when no unseen validation images serve.
    calibrates_by_inner_folds = len(class_names) == 2 and (svm.train_on == "training" or fraction == 0)
    chooses_by_inner_folds = bool(svm.C_grid) and svm.C_selection == "inner"
    purposes = [p for p, needed in (("choosing C", chooses_by_inner_folds), ("calibrating the SVM",
                                                                           calibrates_by_inner_folds)) if needed]
    for k, split in enumerate(splits, start=1):
        train = np.setdiff1d(np.arange(len(labels)), split["test_indices"])
        where = f"repeat {split['repeat']} fold {split['fold']}"
        label, n_groups = fewest_groups_per_class(labels[train], groups[train])
        if fraction > 0 and n_groups < 2:
            raise PipelineError(f"{where}: the training part holds {n_groups} group of class '{class_names[label]}', "
                                "too few to set one aside for the inner validation split; lower cv.n_splits, or "
                                "set finetune.validation_fraction to 0 with evaluation.operating_point: argmax.")
        fit, _ = inner_validation_split(labels[train], groups[train], fraction, settings.seed + k)
        learns = train[fit] if svm.train_on == "fit" else train
        label, n_groups = fewest_groups_per_class(labels[learns], groups[learns])
        if purposes and n_groups < svm.inner_folds:
            fixes = ([f"lower svm.inner_folds to {n_groups}"] if n_groups >= 2 else []) + ["lower cv.n_splits"]
            if chooses_by_inner_folds:
                fixes.append("set svm.C_grid to [] (a fixed svm.C), or svm.C_selection: validation")
            if calibrates_by_inner_folds:
                fixes.append("use svm.train_on: fit with finetune.validation_fraction > 0 (calibration on the "
                             "validation images)")
            raise PipelineError(
                f"{where}: the SVM's training images hold {n_groups} groups of class '{class_names[label]}', fewer "
                f"than svm.inner_folds = {svm.inner_folds} for {' and '.join(purposes)}; " + ", or ".join(fixes) + "."
            )


def fold_record(test: np.ndarray, labels: np.ndarray, class_names: dict[int, str]) -> dict:
    """JSON record of one fold: test indices and class counts of both parts."""
    in_test = np.zeros(len(labels), dtype=bool)
    in_test[test] = True

    def counts(mask: np.ndarray) -> dict[str, int]:
        c = Counter(labels[mask].tolist())
        return {class_names[k]: int(c.get(k, 0)) for k in sorted(class_names)}

    return {"test_indices": test.tolist(), "test_counts": counts(in_test), "train_counts": counts(~in_test)}


def main(argv: list[str]) -> None:
    (dataset,) = parse_args(argv, ["dataset"], "python -m stages.folds DATASET")
    settings = load_settings()
    seed, n_splits, grouping = settings.seed, settings.cv.n_splits, settings.cv.grouping
    manifest = load_manifest(dataset)
    labels, groups = manifest["label"].to_numpy(), groups_for(manifest, grouping)
    class_names = dict(zip(manifest["label"], manifest["class_name"]))
    check_enough_groups(labels, groups, class_names, n_splits=n_splits,
                        where=str(prepared.folder(dataset) / prepared.MANIFEST))
    splits = []
    for repeat in range(1, settings.cv.repeats + 1):
        if settings.cv.folds == "official":
            folds = official_folds(manifest, n_splits=n_splits, groups=groups, grouping=grouping,
                                   where=str(prepared.folder(dataset) / prepared.MANIFEST))
        else:
            folds = stratified_group_folds(labels, groups, n_splits, repeat_seed(seed, repeat))
        check_every_class_tested(folds, labels, class_names, seed, repeat)
        splits += [{"repeat": repeat, "fold": k, **fold_record(test, labels, class_names)}
                   for k, test in enumerate(folds, start=1)]
    check_inner_splits(labels, groups, splits, class_names, settings)
    record = {
        "dataset": dataset,
        "n_splits": n_splits,
        "repeats": settings.cv.repeats,
        "seed": seed,
        "n_images": int(len(manifest)),
        "grouping": grouping,
        "folds_from": settings.cv.folds,
        "n_groups": int(len(np.unique(groups))),
        "folds": splits,
        "groups": groups.tolist(),
    }
    write_record(dataset, record)
    for fold in record["folds"]:
        log("folds", f"{dataset}: repeat {fold['repeat']} fold {fold['fold']}/{n_splits} test {fold['test_counts']}")


if __name__ == "__main__":
    run_stage(main)
