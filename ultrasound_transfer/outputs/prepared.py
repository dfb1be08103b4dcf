"""``normalize``'s output: ``data/prepared/<dataset>/``, the dataset as the networks read it.

* ``images.npy``: uint8 (N, S, S), each frame decoded to gray and made square;
* ``manifest.csv``: one row per image, in the array's order (:data:`MANIFEST_KEYS`
  and what the shortcut audit reads);
* ``preprocessing.json``: how a frame became its square (:class:`Preprocessing`):
  the one record of it, copied into every network trained on the dataset, so
  a new scan is read the same way whatever ``params.yaml`` says later;
* ``report.json``: counts, exclusions, duplicates and the shortcut audit;
* ``fingerprints.npy``: each image's perceptual fingerprints (of the frame and
  its crops, :mod:`ultrasound_transfer.data.near_duplicates`), row for row,
  so that another dataset's images can be checked for near-copies of these;
* ``near_duplicates.png``: the closest pairs, to check the threshold by eye.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ultrasound_transfer.choices import OFFICIAL_FOLD_COLUMN
from ultrasound_transfer.common import PipelineError, atomic_dir, read_json, write_json
from ultrasound_transfer.outputs.stages import repro, stage_name

PREPARED_DIR = Path("data/prepared")
IMAGES, MANIFEST, PREPROCESSING, REPORT, SHEET = ("images.npy", "manifest.csv", "preprocessing.json", "report.json",
                                                  "near_duplicates.png")
FINGERPRINTS = "fingerprints.npy"
# The manifest's columns that identify an image and its place in the study (the audit adds its own).
MANIFEST_KEYS = ("id", "source", "label", "class_name", "group", "group_exact", "case", "sha256", "height", "width")


def official_fold_column(n_splits: int) -> str:
    """The manifest column of each image's test fold (1..n) in its dataset's official ``n_splits``-fold partition
    (a dataset that publishes one: BUS-BRA)."""
    return OFFICIAL_FOLD_COLUMN.format(n_splits)


def stage(dataset: str) -> str:
    return stage_name("normalize", dataset)


def folder(dataset: str) -> Path:
    return PREPARED_DIR / dataset


@dataclass(frozen=True)
class Preprocessing:
    """How ``normalize`` turned a frame into the square the networks read (and how a new scan must be read)."""

    image_size: int          # side of the square, px (params image_size)
    resize: str              # letterbox, crop or stretch (params normalize.resize)
    gray: str                # how colour and 16-bit frames became 8-bit gray

    def as_dict(self) -> dict:
        return asdict(self)


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
    path = folder(dataset) / MANIFEST
    if not path.exists():
        raise PipelineError(f"{path} not found; run '{repro(stage(dataset))}' first.")
    return pd.read_csv(path, dtype={"group": str, "group_exact": str, "case": str}, keep_default_na=False)


def load_prepared(dataset: str) -> Prepared:
    """Images and manifest of a normalized dataset, checked against each other."""
    manifest = load_manifest(dataset)
    images = np.load(folder(dataset) / IMAGES)
    if len(images) != len(manifest):
        raise PipelineError(
            f"{folder(dataset)}: {IMAGES} has {len(images)} images but {MANIFEST} {len(manifest)} rows; "
            f"rerun 'dvc repro -f {stage(dataset)}'."
        )
    return Prepared(images, manifest)


def load_preprocessing(dataset: str) -> Preprocessing:
    """How ``dataset``'s frames were made square (written by ``normalize``)."""
    path = folder(dataset) / PREPROCESSING
    if not path.is_file():
        raise PipelineError(f"{path} not found; it is written by a newer normalize: run '{repro(stage(dataset))}'.")
    return Preprocessing(**read_json(path))


def load_fingerprints(dataset: str) -> np.ndarray:
    """The images' fingerprints (N, variants, 2), in manifest order."""
    path = folder(dataset) / FINGERPRINTS
    if not path.is_file():
        raise PipelineError(f"{path} not found; it is written by a newer normalize: run '{repro(stage(dataset))}'.")
    return np.load(path)


def load_report(dataset: str) -> dict:
    return read_json(folder(dataset) / REPORT)


def write_prepared(dataset: str, *, images: np.ndarray, manifest: pd.DataFrame, preprocessing: Preprocessing,
                   report: dict, fingerprints: np.ndarray, draw_sheet: Callable[[Path], None]) -> None:
    """All of ``data/prepared/<dataset>/`` at once (or nothing, should any part fail)."""
    with atomic_dir(folder(dataset)) as tmp:
        np.save(tmp / IMAGES, images)
        np.save(tmp / FINGERPRINTS, fingerprints)
        manifest.to_csv(tmp / MANIFEST, index=False)
        write_json(tmp / PREPROCESSING, preprocessing.as_dict())
        write_json(tmp / REPORT, report)
        draw_sheet(tmp / SHEET)
