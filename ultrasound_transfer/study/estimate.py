"""What a grid of experiments will cost, before it runs: multiply-adds and hours.

``ultrasound-transfer protocol paper --dry-run`` prints this table.  The
arithmetic is exact for the networks as built (counted layer by layer); the
hours assume a sustained throughput and fixed minutes per unit, both stated,
and ``benchmarks/study_cost.py`` measures how far real runs are from the
arithmetic.
"""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.outputs import prepared
from ultrasound_transfer.settings import Settings

# Images of the two-class task when the dataset is not prepared yet (docs/datasets.md).
PUBLISHED_IMAGES = {"busi": 647, "rodrigues": 250}
# What the estimate assumes: sustained float32 arithmetic of a current workstation GPU in
# Keras, and per unit (dataset x network x strategy) the fixed costs of building networks,
# loading ImageNet weights, tracing the training step per fold and starting processes.
DEFAULT_TFLOPS = 20.0
DEFAULT_OVERHEAD_MIN = 3.0


def image_count(dataset: str, override: dict[str, int]) -> int | None:
    """Images of ``dataset``: as given, as prepared, or as published; None when unknown."""
    if dataset in override:
        return override[dataset]
    manifest = prepared.folder(dataset) / prepared.MANIFEST
    if manifest.exists():
        return len(pd.read_csv(manifest, usecols=["id"]))
    return PUBLISHED_IMAGES.get(dataset)


def cost_estimate(settings: Settings, strategies: list[float], *, images: dict[str, int], tflops: float,
                  overhead_min: float) -> tuple[str, float]:
    """A table of the grid's arithmetic and hours, and the total hours (datasets of known size only).

    Per dataset x network x strategy: the multiply-adds per image of the frozen
    prefix and of the trained tail (:mod:`ultrasound_transfer.networks.cost`),
    the whole unit's work over folds and epochs with the prefix cached, and
    hours at ``tflops`` sustained (two floating-point operations per
    multiply-add) plus ``overhead_min`` of fixed costs.
    """
    from ultrasound_transfer.networks.backbones import build_classifier
    from ultrasound_transfer.networks.cost import split_macs, unit_work

    cfg, size, folds = settings.finetune, settings.image_size, settings.cv.n_splits
    rows, total_hours = [], 0.0
    for model_name in settings.models:
        for ft in strategies:
            model, _ = build_classifier(model_name, image_size=size, n_classes=2, weights="none", ft_fraction=ft,
                                        head=cfg.head)
            macs = split_macs(model)
            for dataset in settings.datasets:
                n = image_count(dataset, images)
                row = [dataset, n if n is not None else "?", model_name, f"{ft:g}",
                       f"{macs.prefix / 1e9:.3g}", f"{macs.tail / 1e9:.3g}"]
                if n is None:
                    rows.append(row + ["?", "?"])
                    continue
                work = unit_work(macs, images=n, folds=folds, epochs=cfg.epochs,
                                 validation_fraction=cfg.validation_fraction, repeats=settings.cv.repeats)
                hours = 2 * work.total / (tflops * 1e12) / 3600 + overhead_min / 60
                total_hours += hours
                rows.append(row + [f"{work.total / 1e15:.3g}", f"{hours:.2f}"])
    headers = ["dataset", "images", "network", "ft_fraction", "prefix GMAC/img", "tail GMAC/img", "PMAC", "hours"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), total_hours
