"""Stage ``download``: put a dataset's raw files under ``data/raw/<dataset>/``.

Usage: ``python -m stages.download DATASET``.  Reads params section ``download``.

* ``phantom`` and ``phantom_site_b`` are generated (see :mod:`ultrasound_transfer.data.phantom`),
  written as images plus ``labels.csv`` (``path,label,case``).
* A dataset of one's own (``download.<name>.layout``) is used as placed in
  ``data/raw/<name>/`` in its layout, or fetched as a zip from its ``url``.
* A real dataset is used as found, without network access, when
  ``data/raw/<dataset>/`` already holds it in its official layout (extracted
  by hand), or when its archive lies in ``data/raw/_downloads/`` (checksum
  verified where known).  Otherwise its archive is downloaded from
  ``download.<dataset>.url`` (resumed, retried, verified) and extracted.
  Datasets without a public archive (DDTI, salivary glands) are placed by
  hand; the error message says what to put where.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2

from ultrasound_transfer.choices import DATASETS
from ultrasound_transfer.common import PipelineError, Stopwatch, atomic_dir, check_choice, log, parse_args, run_stage
from ultrasound_transfer.data import datasets, fetch, phantom
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.paths import RAW_DIR
from ultrasound_transfer.settings import SourceSettings

DOWNLOADS_DIR = RAW_DIR / "_downloads"
FETCH_RETRIES = 5        # with back-off 2, 4, 8, 16, 32 s: rides out a minute of a flaky host
FETCH_BACKOFF_S = 2.0


def write_phantom(spec: phantom.PhantomSettings, out_dir: Path) -> int:
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


def already_in_place(dataset: str, raw_dir: Path, layout: str | None) -> bool:
    """True if ``raw_dir`` holds the dataset in its official layout, or a dataset of one's own in its ``layout``
    (checked by scanning it)."""
    if not raw_dir.is_dir() or not any(raw_dir.iterdir()):
        return False
    try:
        datasets.scan(dataset, raw_dir, layout=layout)
    except PipelineError as problem:
        kind = f"the {layout} layout declared in download.{dataset}.layout" if layout else "its official layout"
        raise PipelineError(
            f"{raw_dir} exists but does not hold {dataset} in {kind}: {problem} "
            f"Fix it, or delete {raw_dir} to download the dataset afresh."
        ) from problem
    return True


def source_of(dataset: str, settings: SourceSettings) -> datasets.Source:
    """A built-in dataset's source, or that of a dataset of one's own (:func:`datasets.own_source`)."""
    return datasets.SOURCES.get(dataset) or datasets.own_source(dataset, settings.layout, settings.url)


def obtain_archive(dataset: str, settings: SourceSettings) -> Path:
    """The dataset's archive in ``data/raw/_downloads/``: found there and verified, or downloaded."""
    source = source_of(dataset, settings)
    url, sha256 = settings.url, settings.sha256
    archive = DOWNLOADS_DIR / source.archive
    if archive.exists():
        log("download", f"{dataset}: using {archive}")
        fetch.verify_checksum(archive, sha256)
        if not sha256:
            log("download", f"{dataset}: no checksum to verify against; SHA-256 is {fetch.sha256_of(archive)} "
                f"(set download.{dataset}.sha256 to pin it)")
        return archive
    if not url:
        raise PipelineError(
            f"{dataset} has no download address. Get {source.how_to_get}, then either unpack it into "
            f"{RAW_DIR / dataset}/ or put the zip archive at {archive}."
        )
    log("download", f"{dataset}: downloading {url}")
    return fetch.download(url, archive, sha256, retries=FETCH_RETRIES, backoff=FETCH_BACKOFF_S)


def obtain_real_dataset(dataset: str, settings: SourceSettings) -> None:
    """Make sure ``data/raw/<dataset>`` holds the dataset, downloading only if needed."""
    raw_dir = RAW_DIR / dataset
    if already_in_place(dataset, raw_dir, settings.layout):
        log("download", f"{dataset}: using the files already in {raw_dir}")
        return
    source = source_of(dataset, settings)
    if source.archive is None and dataset not in datasets.SOURCES:
        raise PipelineError(f"{raw_dir} holds no images of {dataset}; place {source.how_to_get}, or give "
                            f"download.{dataset}.url, a zip archive of them.")
    if source.archive is None:
        raise PipelineError(
            f"{dataset} cannot be downloaded automatically (no archive, no licence to redistribute). "
            f"Assemble {source.how_to_get}."
        )
    archive = obtain_archive(dataset, settings)
    log("download", f"{dataset}: extracting {archive} into {raw_dir}")
    fetch.extract_zip(archive, raw_dir)
    try:
        datasets.scan(dataset, raw_dir, layout=settings.layout)
    except PipelineError as problem:
        raise PipelineError(f"{archive} unpacked, but not in the expected layout: {problem}") from problem


def main(argv: list[str]) -> None:
    (dataset,) = parse_args(argv, ["dataset"], "python -m stages.download DATASET")
    settings = load_settings()
    check_choice("datasets", dataset, (*DATASETS, *settings.sources))
    clock = Stopwatch()
    if dataset in settings.phantoms:
        spec = settings.phantoms[dataset]
        log("download", f"{dataset}: generating {spec.count} images (difficulty {spec.difficulty}, seed {spec.seed})")
        with atomic_dir(RAW_DIR / dataset) as tmp:
            n = write_phantom(spec, tmp)
        log("download", f"{dataset}: wrote {n} images to {RAW_DIR / dataset} in {clock}")
    else:
        obtain_real_dataset(dataset, settings.sources[dataset])
        log("download", f"{dataset}: ready in {RAW_DIR / dataset} ({clock})")


if __name__ == "__main__":
    run_stage(main)
