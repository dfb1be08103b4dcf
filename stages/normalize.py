"""Stage ``normalize``: decode, gray, letterbox; one array file, a manifest and a report.

Usage: ``python -m stages.normalize DATASET``.  Reads params ``image_size`` and
section ``normalize``.

Input: ``data/raw/<dataset>/`` in the dataset's official layout (see
:mod:`stages.datasets`).  Output in ``data/prepared/<dataset>/``:

* ``images.npy``: uint8 array (N, image_size, image_size);
* ``manifest.csv``: one row per image, in the array's order, with ``id, source,
  label, class_name, group, case, sha256, height, width``;
* ``report.json``: counts per class, files left out and why, image size range,
  exact and near-duplicate groups; also printed as a table;
* ``near_duplicates.png``: the closest pairs of images from different cases,
  linked or not, to check the near-duplicate threshold by eye.

Images with identical pixels, or near-duplicates (see
:mod:`stages.near_duplicates`), share a group: ``group_exact`` joins cases and
identical pixels, ``group`` also near-duplicates.  Identical pixels under
different labels cannot both be right: all copies are left out and listed;
near-duplicates under different labels are listed and, by default
(``normalize.near_duplicate_cross_label: exclude``), left out too.  Classes are
numbered in sorted order of their names, so ``benign`` is 0 and ``malignant``
is 1, the positive class of sensitivity and specificity.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
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
from stages.near_duplicates import N_VARIANTS, contact_sheet, fingerprints, near_pairs

MIN_IMAGE_SIZE = 32
SHEET_PAIRS = 12          # pairs shown on the contact sheet
SHEET_MARGIN_BITS = 8     # the sheet also shows pairs up to this far beyond the threshold


def decode_all(
    raw_dir: Path, rows: list[dict], size: int, on_undecodable: str
) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict]]:
    """Decode and letterbox every listed image, and fingerprint it.

    Returns the stack, the fingerprints (N, variants, 2), the rows kept (with
    sha256 and native size added) and the files left out.  An undecodable file
    is an error, or with ``on_undecodable='skip'`` left out and reported.
    """
    stack, prints, kept, excluded = [], [], [], []
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
        prints.append(fingerprints(image))
        kept.append({**row, "sha256": pixel_sha256(image), "height": image.shape[0], "width": image.shape[1]})
    if not stack:
        return np.zeros((0, size, size), np.uint8), np.zeros((0, N_VARIANTS, 2), np.uint64), kept, excluded
    return np.stack(stack), np.stack(prints), kept, excluded


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


def cross_label_near_duplicates(rows: list[dict], pairs: np.ndarray, distances: np.ndarray) -> list[dict]:
    """Near-duplicate pairs filed under different labels, closest first."""
    found = [
        {"files": [rows[i]["path"], rows[j]["path"]], "labels": [rows[i]["label"], rows[j]["label"]], "distance": int(d)}
        for (i, j), d in zip(pairs, distances)
        if rows[i]["label"] != rows[j]["label"]
    ]
    return sorted(found, key=lambda pair: pair["distance"])


def build_manifest(dataset: str, rows: list[dict], near: np.ndarray) -> pd.DataFrame:
    """The manifest of the kept images, with groups joined over cases, identical pixels
    and (column ``group``) the near-duplicate pairs ``near``."""
    table = pd.DataFrame(rows)
    classes = sorted(table["label"].unique())
    cases = [case or f"image:{path}" for case, path in zip(table["case"], table["path"])]
    return pd.DataFrame(
        {
            "id": [f"{dataset}/{p}" for p in table["path"]],
            "source": table["path"],
            "label": [classes.index(c) for c in table["label"]],
            "class_name": table["label"],
            "group": merge_groups(cases, list(table["sha256"]), near),
            "group_exact": merge_groups(cases, list(table["sha256"])),
            "case": table["case"],
            "sha256": table["sha256"],
            "height": table["height"],
            "width": table["width"],
        }
    )


def near_duplicate_groups(manifest: pd.DataFrame) -> list[int]:
    """Sizes (in images) of the groups that near-duplicate links made out of several exact groups."""
    merged = manifest.groupby("group")["group_exact"].nunique()
    sizes = manifest.groupby("group").size()
    return sorted((int(sizes[g]) for g in merged[merged > 1].index), reverse=True)


def dataset_report(manifest: pd.DataFrame, ignored: list[dict], excluded: list[dict], conflicts: list[dict],
                   near: dict) -> dict:
    """Counts and lists a reader checks before trusting the dataset."""
    duplicated = manifest[manifest.duplicated("sha256", keep=False)]
    group_sizes = manifest.groupby("group").size()
    near_sizes = near_duplicate_groups(manifest)
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
        "near_duplicate_threshold_bits": near["threshold"],
        "near_duplicate_pairs": near["pairs"],
        "near_duplicate_groups": len(near_sizes),
        "near_duplicate_group_sizes": near_sizes,
        "cross_label_near_duplicates": near["cross_label"],
        "excluded": excluded,
    }


def report_table(dataset: str, report: dict) -> str:
    """The report as a few readable lines for the log."""
    rows = [[f"class {k}", v] for k, v in report["classes"].items()]
    rows += [["groups (patients/cases/duplicates)", report["groups"]],
             ["image height range", "{}-{}".format(*report["height_range"])],
             ["image width range", "{}-{}".format(*report["width_range"])],
             ["exact-duplicate sets", report["exact_duplicate_sets"]],
             ["near-duplicate groups", report["near_duplicate_groups"]],
             ["cross-label near-duplicate pairs", len(report["cross_label_near_duplicates"])]]
    rows += [[f"excluded: {k}", v] for k, v in report["excluded_images"].items()]
    rows += [[f"ignored file: {k}", v] for k, v in report["ignored_files"].items()]
    return tabulate(rows, headers=[dataset, "count"], tablefmt="simple")


def closest_pairs_sheet(stack: np.ndarray, manifest: pd.DataFrame, pairs: np.ndarray, distances: np.ndarray,
                        threshold: int, n: int = SHEET_PAIRS) -> np.ndarray:
    """Contact sheet of the ``n`` closest pairs from different cases (and pixels), linked or not."""
    exact = manifest["group_exact"].to_numpy()
    rows = [(d, i, j) for (i, j), d in zip(pairs, distances) if exact[i] != exact[j]]
    rows.sort()
    images, captions = [], []
    for d, i, j in rows[:n]:
        images.append((stack[i], stack[j]))
        verdict = "near-duplicate" if d <= threshold else "kept apart"
        captions.append(f"{d} bits: {verdict}\n{manifest['source'][i]}\n{manifest['source'][j]}")
    return contact_sheet(images, captions)


def reindex_pairs(pairs: np.ndarray, distances: np.ndarray, keep: list[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs among the kept rows (of ``n``), renumbered to their new positions."""
    position = np.full(n, -1)
    position[keep] = np.arange(len(keep))
    mapped = position[pairs.reshape(-1, 2)]
    both = (mapped >= 0).all(axis=1)
    return mapped[both], distances[both]


def main(argv: list[str]) -> None:
    (dataset,) = parse_args(argv, ["dataset"], "python -m stages.normalize DATASET")
    params = load_params()
    size, cfg = require(params, "image_size"), require(params, "normalize")
    check_range("image_size", size, MIN_IMAGE_SIZE, 2048, integer=True)
    check_choice("normalize.on_undecodable", cfg["on_undecodable"], ("error", "skip"))
    threshold = cfg["near_duplicate_bits"]
    check_range("normalize.near_duplicate_bits", threshold, 0, 64, integer=True)
    check_choice("normalize.near_duplicate_cross_label", cfg["near_duplicate_cross_label"], ("exclude", "keep"))
    clock = Stopwatch()
    raw_dir = RAW_DIR / dataset
    scan = datasets.scan(dataset, raw_dir, {"classes": cfg["busi_classes"]})
    log("normalize", f"{dataset}: decoding {len(scan.rows)} images, letterboxing to {size}x{size}")
    stack, prints, rows, excluded = decode_all(raw_dir, scan.rows, size, cfg["on_undecodable"])

    conflicts = conflicting_duplicates(rows)
    drop = {path for c in conflicts for path in c["files"]}
    excluded += [{"path": p, "reason": "identical pixels under another label"} for p in sorted(drop)]
    # Candidates reach a little past the threshold, for the contact sheet.
    candidates, distances = near_pairs(prints, threshold + SHEET_MARGIN_BITS)
    linked = distances <= threshold
    cross_label = cross_label_near_duplicates(rows, candidates[linked], distances[linked])
    if cfg["near_duplicate_cross_label"] == "exclude":
        near_conflicts = {p for pair in cross_label for p in pair["files"]} - drop
        excluded += [{"path": p, "reason": "near-duplicate under another label"} for p in sorted(near_conflicts)]
        drop |= near_conflicts
    keep = [i for i, row in enumerate(rows) if row["path"] not in drop]
    if not keep:
        raise PipelineError(f"{raw_dir}: no usable image is left; see the reasons above.")
    candidates, distances = reindex_pairs(candidates, distances, keep, len(rows))
    stack, rows = stack[keep], [rows[i] for i in keep]
    manifest = build_manifest(dataset, rows, candidates[distances <= threshold])
    near = {"threshold": threshold, "pairs": int((distances <= threshold).sum()), "cross_label": cross_label}
    report = dataset_report(manifest, scan.ignored, excluded, conflicts, near)
    sheet = closest_pairs_sheet(stack, manifest, candidates, distances, threshold)
    with atomic_dir(PREPARED_DIR / dataset) as tmp:
        np.save(tmp / "images.npy", stack)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        write_json(tmp / "report.json", report)
        cv2.imwrite(str(tmp / "near_duplicates.png"), sheet)
    print(report_table(dataset, report), flush=True)
    log("normalize", f"{dataset}: wrote {len(manifest)} images to {PREPARED_DIR / dataset} ({clock})")


if __name__ == "__main__":
    run_stage(main)
