"""Stage ``normalize``: decode, gray, letterbox; one array file, a manifest and a report.

Usage: ``python -m stages.normalize DATASET``.  Reads params ``image_size`` and
section ``normalize``.

Input: ``data/raw/<dataset>/`` in the dataset's official layout (see
:mod:`stages.datasets`).  Output in ``data/prepared/<dataset>/``:

* ``images.npy``: uint8 array (N, image_size, image_size);
* ``manifest.csv``: one row per image, in the array's order, with ``id, source,
  label, class_name, group, case, sha256, height, width``;
* ``report.json``: counts per class, files left out and why, image size range,
  duplicate groups; also printed as a table.

Images with identical pixels share a group.  Identical pixels under different
labels cannot both be right: all copies are left out and listed.  Classes are
numbered in sorted order of their names, so ``benign`` is 0 and ``malignant``
is 1, the positive class of sensitivity and specificity.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from stages import datasets
from stages.common import (
    PipelineError, Stopwatch, atomic_dir, check_choice, check_range, load_params, log, parse_args, require, run_stage,
    write_json,
)
from stages.data import PREPARED_DIR, RAW_DIR
from stages.grouping import merge_groups
from stages.imaging import letterbox, pixel_sha256, read_gray

MIN_IMAGE_SIZE = 32


def decode_all(raw_dir: Path, rows: list[dict], size: int, on_undecodable: str) -> tuple[np.ndarray, list[dict], list[dict]]:
    """Decode and letterbox every listed image.

    Returns the stack, the rows kept (with sha256 and native size added) and
    the files left out.  An undecodable file is an error, or with
    ``on_undecodable='skip'`` left out and reported.
    """
    stack, kept, excluded = [], [], []
    for row in rows:
        path = raw_dir / row["path"]
        if not path.exists():
            raise PipelineError(f"{raw_dir}: the listed image {row['path']} does not exist at {path}.")
        try:
            image = read_gray(path)
        except PipelineError as problem:
            if on_undecodable != "skip":
                raise PipelineError(f"{problem} (or set normalize.on_undecodable: skip to leave such files out)") from None
            excluded.append({"path": row["path"], "reason": "undecodable image"})
            continue
        stack.append(letterbox(image, size))
        kept.append({**row, "sha256": pixel_sha256(image), "height": image.shape[0], "width": image.shape[1]})
    return np.stack(stack) if stack else np.zeros((0, size, size), np.uint8), kept, excluded


def conflicting_duplicates(rows: list[dict]) -> list[dict]:
    """Sets of identical pixels filed under more than one label."""
    by_hash: dict[str, list[dict]] = {}
    for row in rows:
        by_hash.setdefault(row["sha256"], []).append(row)
    return [
        {"sha256": h, "files": [r["path"] for r in group], "labels": sorted({r["label"] for r in group})}
        for h, group in by_hash.items()
        if len({r["label"] for r in group}) > 1
    ]


def build_manifest(dataset: str, rows: list[dict]) -> pd.DataFrame:
    """The manifest of the kept images, with groups joined over cases and identical pixels."""
    table = pd.DataFrame(rows)
    classes = sorted(table["label"].unique())
    cases = [case or f"image:{path}" for case, path in zip(table["case"], table["path"])]
    return pd.DataFrame(
        {
            "id": [f"{dataset}/{p}" for p in table["path"]],
            "source": table["path"],
            "label": [classes.index(c) for c in table["label"]],
            "class_name": table["label"],
            "group": merge_groups(cases, list(table["sha256"])),
            "case": table["case"],
            "sha256": table["sha256"],
            "height": table["height"],
            "width": table["width"],
        }
    )


def dataset_report(manifest: pd.DataFrame, ignored: list[dict], excluded: list[dict], conflicts: list[dict]) -> dict:
    """Counts and lists a reader checks before trusting the dataset."""
    duplicated = manifest[manifest.duplicated("sha256", keep=False)]
    group_sizes = manifest.groupby("group").size()
    return {
        "images": int(len(manifest)),
        "classes": {str(k): int(v) for k, v in manifest["class_name"].value_counts().sort_index().items()},
        "groups": int(manifest["group"].nunique()),
        "largest_group": int(group_sizes.max()),
        "height_range": [int(manifest["height"].min()), int(manifest["height"].max())],
        "width_range": [int(manifest["width"].min()), int(manifest["width"].max())],
        "exact_duplicate_sets": int(duplicated["sha256"].nunique()),
        "images_in_exact_duplicate_sets": int(len(duplicated)),
        "ignored_files": dict(Counter(i["reason"] for i in ignored)),
        "excluded_images": dict(Counter(e["reason"] for e in excluded)),
        "conflicting_duplicates": conflicts,
        "excluded": excluded,
    }


def report_table(dataset: str, report: dict) -> str:
    """The report as a few readable lines for the log."""
    rows = [[f"class {k}", v] for k, v in report["classes"].items()]
    rows += [["groups (patients/cases/duplicates)", report["groups"]],
             ["image height range", "{}-{}".format(*report["height_range"])],
             ["image width range", "{}-{}".format(*report["width_range"])],
             ["exact-duplicate sets", report["exact_duplicate_sets"]]]
    rows += [[f"excluded: {k}", v] for k, v in report["excluded_images"].items()]
    rows += [[f"ignored file: {k}", v] for k, v in report["ignored_files"].items()]
    return tabulate(rows, headers=[dataset, "count"], tablefmt="simple")


def main(argv: list[str]) -> None:
    (dataset,) = parse_args(argv, ["dataset"], "python -m stages.normalize DATASET")
    params = load_params()
    size, cfg = require(params, "image_size"), require(params, "normalize")
    check_range("image_size", size, MIN_IMAGE_SIZE, 2048, integer=True)
    check_choice("normalize.on_undecodable", cfg["on_undecodable"], ("error", "skip"))
    clock = Stopwatch()
    raw_dir = RAW_DIR / dataset
    scan = datasets.scan(dataset, raw_dir, {"classes": cfg["busi_classes"]})
    log("normalize", f"{dataset}: decoding {len(scan.rows)} images, letterboxing to {size}x{size}")
    stack, rows, excluded = decode_all(raw_dir, scan.rows, size, cfg["on_undecodable"])
    conflicts = conflicting_duplicates(rows)
    conflicted = {path for c in conflicts for path in c["files"]}
    excluded += [{"path": p, "reason": "identical pixels under another label"} for p in sorted(conflicted)]
    keep = [i for i, row in enumerate(rows) if row["path"] not in conflicted]
    if not keep:
        raise PipelineError(f"{raw_dir}: no usable image is left; see the reasons above.")
    stack, rows = stack[keep], [rows[i] for i in keep]
    manifest = build_manifest(dataset, rows)
    report = dataset_report(manifest, scan.ignored, excluded, conflicts)
    with atomic_dir(PREPARED_DIR / dataset) as tmp:
        np.save(tmp / "images.npy", stack)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        write_json(tmp / "report.json", report)
    print(report_table(dataset, report), flush=True)
    log("normalize", f"{dataset}: wrote {len(manifest)} images to {PREPARED_DIR / dataset} ({clock})")


if __name__ == "__main__":
    run_stage(main)
