"""Stage ``normalize``: decode, gray, square; one array file, a manifest, a report with the shortcut audit.

Usage: ``python -m stages.normalize DATASET``.  Reads params ``image_size`` and
section ``normalize``.

Input: ``data/raw/<dataset>/`` in the dataset's official layout (see
:mod:`ultrasound_transfer.data.datasets`).  Output in ``data/prepared/<dataset>/``:

* ``images.npy``: uint8 array (N, image_size, image_size), each frame made square
  by ``normalize.resize`` (letterbox, crop or stretch);
* ``manifest.csv``: one row per image, in the array's order, with ``id, source,
  label, class_name, group, case, sha256, height, width`` and what the shortcut
  audit reads (``padding_share, mean_gray, bright_share``);
* ``preprocessing.json``: how a frame became its square (``image_size``,
  ``normalize.resize``, the gray conversion), which every network trained on
  the dataset records as its own (:mod:`ultrasound_transfer.outputs.prepared`);
* ``report.json``: counts per class, files left out and why, image size range,
  exact and near-duplicate groups, and the shortcut audit
  (:mod:`ultrasound_transfer.evaluation.shortcuts`), with a warning when the
  label can be told from non-lesion features with ROC-AUC of at least
  ``normalize.shortcut_warning_auc``; also printed as a table;
* ``near_duplicates.png``: the closest pairs of images from different cases,
  linked or not, to check the near-duplicate threshold by eye.

Images with identical pixels, or near-duplicates (see
:mod:`ultrasound_transfer.data.near_duplicates`), share a group: ``group_exact`` joins cases and
identical pixels, ``group`` also near-duplicates.  Identical pixels under
different labels cannot both be right: all copies are left out and listed;
near-duplicates under different labels are listed and, by default
(``normalize.near_duplicate_cross_label: exclude``), left out too.  Classes are
numbered in sorted order of their names, so ``benign`` is 0 and ``malignant``
is 1, the positive class of sensitivity and specificity.
"""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.common import PipelineError, Stopwatch, log, parse_args, run_stage
from ultrasound_transfer.data import datasets
from ultrasound_transfer.data.imaging import GRAY_CONVERSION
from ultrasound_transfer.data.manifest import (
    build_manifest,
    conflicting_duplicates,
    cross_label_near_duplicates,
    decode_all,
    image_name,
    reindex_pairs,
)
from ultrasound_transfer.data.near_duplicates import contact_sheet, near_pairs
from ultrasound_transfer.evaluation.shortcuts import shortcut_audit
from ultrasound_transfer.outputs.prepared import Preprocessing, folder, write_prepared
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.paths import RAW_DIR

SHEET_PAIRS = 12          # pairs shown on the contact sheet
SHEET_MARGIN_BITS = 8     # the sheet also shows pairs up to this far beyond the threshold


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
        "ignored": ignored,
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
    for name, model in report["shortcut_audit"]["models"].items():
        rows.append([f"shortcut audit: ROC-AUC from {name.replace('_', ' ')}", f"{model['roc_auc']:.2f}"])
    rows += [[f"excluded: {k}", v] for k, v in report["excluded_images"].items()]
    rows += [[f"ignored file: {k}", v] for k, v in report["ignored_files"].items()]
    return tabulate(rows, headers=[dataset, "count"], tablefmt="simple")


def closest_pairs_sheet(stack: np.ndarray, manifest: pd.DataFrame, pairs: np.ndarray, distances: np.ndarray, *,
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


def main(argv: list[str]) -> None:
    (dataset,) = parse_args(argv, ["dataset"], "python -m stages.normalize DATASET")
    settings = load_settings()
    size, cfg = settings.image_size, settings.normalize
    threshold = cfg.near_duplicate_bits
    clock = Stopwatch()
    raw_dir = RAW_DIR / dataset
    source = settings.sources.get(dataset)
    scan = datasets.scan(dataset, raw_dir, layout=source.layout if source else None, busi_classes=cfg.busi_classes,
                         busi_normal_as_benign=cfg.busi_normal_as_benign)
    log("normalize", f"{dataset}: decoding {len(scan.rows)} images, to {size}x{size} by {cfg.resize}")
    stack, prints, rows, excluded = decode_all(raw_dir, scan.rows, size, cfg.on_undecodable, cfg.resize)

    conflicts = conflicting_duplicates(rows)
    drop = {path for c in conflicts for path in c["files"]}
    excluded += [{"path": p, "reason": "identical pixels under another label"} for p in sorted(drop)]
    # Candidates reach a little past the threshold, for the contact sheet.
    candidates, distances = near_pairs(prints, threshold + SHEET_MARGIN_BITS)
    linked = distances <= threshold
    cross_label = cross_label_near_duplicates(rows, candidates[linked], distances[linked])
    if cfg.near_duplicate_cross_label == "exclude":
        near_conflicts = {p for pair in cross_label for p in pair["files"]} - drop
        excluded += [{"path": p, "reason": "near-duplicate under another label"} for p in sorted(near_conflicts)]
        drop |= near_conflicts
    keep = [i for i, row in enumerate(rows) if image_name(row) not in drop]
    if not keep:
        raise PipelineError(f"{raw_dir}: no usable image is left; see the reasons above.")
    candidates, distances = reindex_pairs(candidates, distances, keep, len(rows))
    stack, prints, rows = stack[keep], prints[keep], [rows[i] for i in keep]
    manifest = build_manifest(dataset, rows, candidates[distances <= threshold])
    near = {"threshold": threshold, "pairs": int((distances <= threshold).sum()), "cross_label": cross_label}
    report = dataset_report(manifest, scan.ignored, excluded, conflicts, near)
    report["resize"] = cfg.resize
    report["shortcut_audit"] = shortcut_audit(manifest, warning_auc=cfg.shortcut_warning_auc)
    sheet = closest_pairs_sheet(stack, manifest, candidates, distances, threshold=threshold)
    write_prepared(dataset, images=stack, manifest=manifest, report=report, fingerprints=prints,
                   preprocessing=Preprocessing(image_size=size, resize=cfg.resize, gray=GRAY_CONVERSION),
                   draw_sheet=lambda path: cv2.imwrite(str(path), sheet))
    print(report_table(dataset, report), flush=True)
    for warning in report["shortcut_audit"]["warnings"]:
        log("normalize", f"{dataset}: WARNING: {warning}")
    log("normalize", f"{dataset}: wrote {len(manifest)} images to {folder(dataset)} ({clock})")


if __name__ == "__main__":
    run_stage(main)
