"""Stage ``normalize``: decode, gray, letterbox; one array file and a manifest.

Usage: ``python -m stages.normalize DATASET``.  Reads param ``image_size``.

Input: ``data/raw/<dataset>/labels.csv`` (columns ``path,label,case``) and the
image files it names.  Output in ``data/prepared/<dataset>/``:

* ``images.npy``: uint8 array (N, image_size, image_size);
* ``manifest.csv``: one row per image, in the array's order, with ``id, source,
  label, class_name, group, case, sha256, height, width``;
* ``report.json``: counts per class, image size range, duplicate groups.

Classes are numbered in sorted order of their names, so ``benign`` is 0 and
``malignant`` is 1, the positive class of sensitivity and specificity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.common import (
    PipelineError, Stopwatch, atomic_dir, check_range, load_params, log, parse_args, require, run_stage, write_json,
)
from stages.data import PREPARED_DIR, RAW_DIR
from stages.grouping import merge_groups
from stages.imaging import letterbox, pixel_sha256, read_gray

MIN_IMAGE_SIZE = 32


def read_labels(raw_dir: Path) -> pd.DataFrame:
    """Read and check ``labels.csv`` of a raw dataset."""
    labels_file = raw_dir / "labels.csv"
    if not raw_dir.exists():
        raise PipelineError(
            f"raw data folder {raw_dir} is missing; run 'dvc repro download@{raw_dir.name}' first."
        )
    if not labels_file.exists():
        raise PipelineError(f"{labels_file} is missing; it must list the images as path,label,case.")
    table = pd.read_csv(labels_file, dtype=str, keep_default_na=False)
    missing = {"path", "label", "case"} - set(table.columns)
    if missing:
        raise PipelineError(f"{labels_file} lacks columns {sorted(missing)}; expected path,label,case.")
    if table.empty:
        raise PipelineError(f"{labels_file} lists no images.")
    return table


def load_images(raw_dir: Path, table: pd.DataFrame, size: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Decode every listed image; return the letterboxed stack and per-image facts."""
    stack = np.zeros((len(table), size, size), dtype=np.uint8)
    facts = []
    for i, relative in enumerate(table["path"]):
        path = raw_dir / relative
        if not path.exists():
            raise PipelineError(f"{raw_dir / 'labels.csv'} names {relative}, but {path} does not exist.")
        image = read_gray(path)
        stack[i] = letterbox(image, size)
        facts.append({"sha256": pixel_sha256(image), "height": image.shape[0], "width": image.shape[1]})
    return stack, pd.DataFrame(facts)


def build_manifest(dataset: str, table: pd.DataFrame, facts: pd.DataFrame) -> pd.DataFrame:
    """Combine the label table and decoded facts into the manifest."""
    classes = sorted(table["label"].unique())
    cases = [case or f"image:{path}" for case, path in zip(table["case"], table["path"])]
    return pd.DataFrame(
        {
            "id": [f"{dataset}/{p}" for p in table["path"]],
            "source": table["path"],
            "label": [classes.index(c) for c in table["label"]],
            "class_name": table["label"],
            "group": merge_groups(cases, list(facts["sha256"])),
            "case": table["case"],
            "sha256": facts["sha256"],
            "height": facts["height"],
            "width": facts["width"],
        }
    )


def dataset_report(manifest: pd.DataFrame) -> dict:
    """Counts and ranges a reader checks before trusting the dataset."""
    duplicated = manifest[manifest.duplicated("sha256", keep=False)]
    return {
        "images": int(len(manifest)),
        "classes": {str(k): int(v) for k, v in manifest["class_name"].value_counts().sort_index().items()},
        "groups": int(manifest["group"].nunique()),
        "height_range": [int(manifest["height"].min()), int(manifest["height"].max())],
        "width_range": [int(manifest["width"].min()), int(manifest["width"].max())],
        "exact_duplicate_sets": int(duplicated["sha256"].nunique()),
        "images_in_exact_duplicate_sets": int(len(duplicated)),
    }


def main(argv: list[str]) -> None:
    (dataset,) = parse_args(argv, ["dataset"], "python -m stages.normalize DATASET")
    size = require(load_params(), "image_size")
    check_range("image_size", size, MIN_IMAGE_SIZE, 2048, integer=True)
    clock = Stopwatch()
    raw_dir = RAW_DIR / dataset
    table = read_labels(raw_dir)
    log("normalize", f"{dataset}: decoding {len(table)} images, letterboxing to {size}x{size}")
    stack, facts = load_images(raw_dir, table, size)
    manifest = build_manifest(dataset, table, facts)
    report = dataset_report(manifest)
    with atomic_dir(PREPARED_DIR / dataset) as tmp:
        np.save(tmp / "images.npy", stack)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        write_json(tmp / "report.json", report)
    log("normalize", f"{dataset}: {report['images']} images, classes {report['classes']}, "
        f"{report['groups']} groups, {report['exact_duplicate_sets']} exact-duplicate sets ({clock})")


if __name__ == "__main__":
    run_stage(main)
