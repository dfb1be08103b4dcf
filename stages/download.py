"""Stage ``download``: put a dataset's raw files under ``data/raw/<dataset>/``.

Usage: ``python -m stages.download DATASET``.  Reads params section ``download``.

Only the built-in ``phantom`` dataset exists so far; it is generated, not
downloaded.  Its raw layout is the generic one every importer understands:
image files plus ``labels.csv`` with columns ``path,label,case``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2

from stages import phantom
from stages.data import RAW_DIR
from stages.common import (
    PipelineError, Stopwatch, atomic_dir, check_choice, check_range, load_params, log, parse_args, require, run_stage,
)

KNOWN_DATASETS = ("phantom",)


def phantom_spec(section: dict) -> phantom.PhantomSpec:
    """Validate params section ``download.phantom`` and turn it into a spec."""
    allowed = set(phantom.PhantomSpec.__dataclass_fields__)
    unknown = set(section) - allowed
    if unknown:
        raise PipelineError(
            f"download.phantom has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}."
        )
    spec = phantom.PhantomSpec(**section)
    check_range("download.phantom.count", spec.count, 4, 1_000_000, integer=True)
    check_range("download.phantom.malignant_fraction", spec.malignant_fraction, 0.0, 1.0)
    check_range("download.phantom.images_per_patient", spec.images_per_patient, 1, 1000, integer=True)
    check_range("download.phantom.difficulty", spec.difficulty, 0.0, 1.0)
    check_range("download.phantom.native_size", spec.native_size, 32, 4096, integer=True)
    check_range("download.phantom.seed", spec.seed, 0, 2**32 - 1, integer=True)
    return spec


def write_phantom(spec: phantom.PhantomSpec, out_dir: Path) -> int:
    """Generate the phantom into ``out_dir`` as ``<class>/<patient>_<k>.png`` + ``labels.csv``."""
    rows = []
    for image in phantom.generate(spec):
        relative = Path(image.label) / f"{image.patient}_{image.index}.png"
        (out_dir / image.label).mkdir(exist_ok=True)
        cv2.imwrite(str(out_dir / relative), image.pixels)
        rows.append({"path": relative.as_posix(), "label": image.label, "case": image.patient})
    with open(out_dir / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "case"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str]) -> None:
    (dataset,) = parse_args(argv, ["dataset"], "python -m stages.download DATASET")
    check_choice("datasets", dataset, KNOWN_DATASETS)
    section = require(load_params(), f"download.{dataset}")
    spec = phantom_spec(section)
    clock = Stopwatch()
    log("download", f"{dataset}: generating {spec.count} images (difficulty {spec.difficulty}, seed {spec.seed})")
    with atomic_dir(RAW_DIR / dataset) as tmp:
        n = write_phantom(spec, tmp)
    log("download", f"{dataset}: wrote {n} images to {RAW_DIR / dataset} in {clock}")


if __name__ == "__main__":
    run_stage(main)
