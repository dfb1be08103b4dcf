"""Reading what the data stages wrote: the prepared images, their manifest and the folds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ultrasound_transfer.common import PipelineError, read_json
from ultrasound_transfer.paths import FOLDS_DIR, PREPARED_DIR


@dataclass(frozen=True)
class Prepared:
    """A normalized dataset: the image stack and its manifest, row for row."""

    images: np.ndarray      # uint8 (N, S, S)
    manifest: pd.DataFrame

    @property
    def labels(self) -> np.ndarray:
        return self.manifest["label"].to_numpy()

    @property
    def class_names(self) -> list[str]:
        return class_names_of(self.manifest)


def class_names_of(manifest: pd.DataFrame) -> list[str]:
    """Class names in label order (label k is ``class_names[k]``)."""
    pairs = manifest[["label", "class_name"]].drop_duplicates().sort_values("label")
    return list(pairs["class_name"])


def check_class_names(class_names: list[str]) -> list[str]:
    """Two classes must be benign and malignant: malignant (label 1) is the positive class of every metric."""
    if len(class_names) == 2 and class_names != ["benign", "malignant"]:
        raise PipelineError(
            f"two classes {class_names}: the metrics take 'malignant' as the positive class, so the labels "
            "must be 'benign' and 'malignant' (rename them in the dataset's labels)."
        )
    return class_names


def dataset_facts(manifest: pd.DataFrame, class_names: list[str]) -> dict[str, int]:
    """Images, groups, cases (and those with several images) and images per class, for the report."""
    cases = manifest["case"].astype(str)
    sizes = cases[cases != ""].value_counts()
    return {"images": int(len(manifest)), "groups": int(manifest["group"].nunique()), "cases": int(len(sizes)),
            "cases_with_several_images": int((sizes > 1).sum()),
            **{f"images_{name}": int((manifest["label"] == c).sum()) for c, name in enumerate(class_names)}}


def load_manifest(dataset: str) -> pd.DataFrame:
    """The manifest of a normalized dataset."""
    path = PREPARED_DIR / dataset / "manifest.csv"
    if not path.exists():
        raise PipelineError(f"{path} not found; run 'dvc repro normalize@{dataset}' first.")
    return pd.read_csv(path, dtype={"group": str, "group_exact": str, "case": str}, keep_default_na=False)


def load_prepared(dataset: str) -> Prepared:
    """Images and manifest of a normalized dataset, checked against each other."""
    manifest = load_manifest(dataset)
    images = np.load(PREPARED_DIR / dataset / "images.npy")
    if len(images) != len(manifest):
        raise PipelineError(
            f"{PREPARED_DIR / dataset}: images.npy has {len(images)} images but manifest.csv "
            f"{len(manifest)} rows; rerun 'dvc repro -f normalize@{dataset}'."
        )
    return Prepared(images, manifest)


def load_test_folds(dataset: str, n_images: int) -> list[np.ndarray]:
    """Test indices of every split (each fold of each repeat, in order), checked: each repeat's folds
    partition ``0..n_images-1``."""
    record = read_json(FOLDS_DIR / f"{dataset}.json")
    folds = [np.asarray(f["test_indices"], dtype=int) for f in record["folds"]]
    repeats = np.array([f.get("repeat", 1) for f in record["folds"]])
    partitions = all(np.array_equal(np.sort(np.concatenate([folds[i] for i in np.flatnonzero(repeats == r)])),
                                    np.arange(n_images)) for r in np.unique(repeats))
    if record["n_images"] != n_images or not partitions:
        raise PipelineError(
            f"{FOLDS_DIR / dataset}.json does not match data/prepared/{dataset} "
            f"({record['n_images']} vs {n_images} images); rerun 'dvc repro folds@{dataset}'."
        )
    return folds


def load_split_names(dataset: str) -> list[tuple[int, int]]:
    """(repeat, fold within the repeat) of every split, in the order of :func:`load_test_folds`."""
    folds = read_json(FOLDS_DIR / f"{dataset}.json")["folds"]
    return [(f.get("repeat", 1), f.get("fold", k)) for k, f in enumerate(folds, start=1)]


def load_fold_groups(dataset: str) -> np.ndarray:
    """The group of every image as the folds stage used it (see ``cv.grouping``).

    Inner splits (early stopping, SVM tuning) use the same groups, so they
    guard against the same leaks as the outer folds.
    """
    return np.asarray(read_json(FOLDS_DIR / f"{dataset}.json")["groups"], dtype=str)


def train_indices(test: np.ndarray, n_images: int) -> np.ndarray:
    """All indices not in ``test``, in increasing order."""
    mask = np.ones(n_images, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask)
