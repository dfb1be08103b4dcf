"""``folds``' output: ``data/folds/<dataset>.json``, every split of the cross-validation.

The record holds ``dataset``, ``n_splits``, ``repeats``, ``seed``,
``n_images``, ``grouping``, ``n_groups``, ``groups`` (the group of every
image as the folds used it) and ``folds``: one entry per split (each fold of
each repeat, numbered ``k`` = 1, 2, ... in this order) with its ``repeat``,
``fold``, ``test_indices`` and class counts.  It is committed to git.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ultrasound_transfer.common import PipelineError, read_json, write_json
from ultrasound_transfer.outputs.stages import repro, stage_name

FOLDS_DIR = Path("data/folds")


def stage(dataset: str) -> str:
    return stage_name("folds", dataset)


def path(dataset: str) -> Path:
    return FOLDS_DIR / f"{dataset}.json"


def load_record(dataset: str) -> dict:
    return read_json(path(dataset))


def write_record(dataset: str, record: dict) -> None:
    write_json(path(dataset), record)


def load_test_folds(dataset: str, n_images: int) -> list[np.ndarray]:
    """Test indices of every split (each fold of each repeat, in order), checked: each repeat's folds
    partition ``0..n_images-1``."""
    record = load_record(dataset)
    folds = [np.asarray(f["test_indices"], dtype=int) for f in record["folds"]]
    repeats = np.array([f.get("repeat", 1) for f in record["folds"]])
    partitions = all(np.array_equal(np.sort(np.concatenate([folds[i] for i in np.flatnonzero(repeats == r)])),
                                    np.arange(n_images)) for r in np.unique(repeats))
    if record["n_images"] != n_images or not partitions:
        raise PipelineError(
            f"{path(dataset)} does not match data/prepared/{dataset} ({record['n_images']} vs {n_images} images); "
            f"rerun '{repro(stage(dataset))}'."
        )
    return folds


def load_split_names(dataset: str) -> list[tuple[int, int]]:
    """(repeat, fold within the repeat) of every split, in the order of :func:`load_test_folds`."""
    return [(f.get("repeat", 1), f.get("fold", k)) for k, f in enumerate(load_record(dataset)["folds"], start=1)]


def load_fold_groups(dataset: str) -> np.ndarray:
    """The group of every image as the folds stage used it (see ``cv.grouping``).

    Inner splits (early stopping, SVM tuning) use the same groups, so they
    guard against the same leaks as the outer folds.
    """
    return np.asarray(load_record(dataset)["groups"], dtype=str)


def train_indices(test: np.ndarray, n_images: int) -> np.ndarray:
    """All indices not in ``test``, in increasing order."""
    mask = np.ones(n_images, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask)
