"""What a grid of experiments will cost, before it runs: multiply-adds and hours.

``ultrasound-transfer protocol paper --dry-run`` prints this table.  The
arithmetic is exact for the networks as built (counted layer by layer); the
hours divide it by a sustained throughput and add fixed minutes per unit:
either assumed (``--tflops``, ``--overhead-min``, both stated) or measured on
the machine that will run the grid (``--calibration``: what
``benchmarks.device_unit`` wrote there, see :func:`measured_rates`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.outputs import prepared
from ultrasound_transfer.settings import Settings

# Images of the two-class task when the dataset is not prepared yet (docs/datasets.md).
PUBLISHED_IMAGES = {"busi": 647, "rodrigues": 250}
# What the estimate assumes: sustained float32 arithmetic of a current workstation GPU in
# Keras, and per unit (dataset x network x strategy) the fixed costs of building networks,
# loading ImageNet weights, tracing the training step per fold and starting processes.
DEFAULT_TFLOPS = 20.0
DEFAULT_OVERHEAD_MIN = 3.0


@dataclass(frozen=True)
class Rates:
    """What the estimate divides the work by: sustained TFLOP/s per training path, and fixed minutes per unit."""

    full_network_tflops: float     # ft_fraction 1: every layer trains, no frozen prefix
    tail_tflops: float             # the frozen-prefix cache: only the tail trains, on cached inputs
    overhead_min: float            # per dataset x network x strategy: building, prefix pass, tracing, predictions
    source: str                    # where the figures come from, said beside the total

    @classmethod
    def assumed(cls, tflops: float, overhead_min: float) -> Rates:
        return cls(tflops, tflops, overhead_min, f"{tflops:g} TFLOP/s sustained plus {overhead_min:g} min per row "
                                                 "(assumed)")

    def tflops(self, *, full_network: bool) -> float:
        return self.full_network_tflops if full_network else self.tail_tflops


def measured_rates(path: Path, *, precision: str, image_size: int) -> Rates:
    """The rates ``benchmarks.device_unit`` measured (its ``device_unit_<backend>.json``), at ``precision`` and
    ``image_size``.

    Per training path, the median over its rows of the steady epochs'
    multiply-adds over their seconds (``steady_macs_per_s``: arithmetic and
    per-step overhead together, as a unit's epochs run); the fixed minutes
    are the median of the rows' fixed cost of a unit (``unit_fixed_s``).  A
    row with no frozen prefix (``ft_fraction`` 1) is the full-network path.
    A path with no row takes the other path's rate, and says so.
    """
    fix = ("run bash benchmarks/device_run.sh (or python -m benchmarks.device_unit) on the machine that will run "
           "the grid, at the protocol's image size and precision, and pass the device_unit_<backend>.json it writes")
    try:
        measured = json.loads(Path(path).read_text())
        rows = [row for row in measured["rows"] if row["precision"] == precision and row["image_size"] == image_size]
        by_path = {full: [row["steady_macs_per_s"] for row in rows if (row["prefix_macs"] == 0) == full]
                   for full in (True, False)}
        tflops = {full: 2 * float(median(values)) / 1e12 for full, values in by_path.items() if values}
        overhead_min = float(median([row["unit_fixed_s"] for row in rows])) / 60 if rows else math.nan
    except (OSError, ValueError, KeyError, TypeError) as problem:
        raise PipelineError(f"--calibration {path}: not a results file of benchmarks.device_unit at today's code "
                            f"({type(problem).__name__}: {problem}); {fix}.") from None
    if not rows:
        found = sorted({f"{row['precision']} at {row['image_size']} px" for row in measured["rows"]})
        raise PipelineError(f"--calibration {path}: no row in finetune.precision {precision} at image_size "
                            f"{image_size} (it has {', '.join(found) or 'no rows'}); {fix}.")
    full, tail = tflops.get(True, tflops.get(False)), tflops.get(False, tflops.get(True))
    figures = {"full network TFLOP/s": full, "frozen-prefix tail TFLOP/s": tail, "fixed min per unit": overhead_min}
    bad = [f"{name} {value}" for name, value in figures.items()
           if not math.isfinite(value) or value < 0 or (value == 0 and "TFLOP" in name)]
    if bad:
        raise PipelineError(f"--calibration {path}: {', '.join(bad)} is not a usable figure; {fix}.")
    missing = [name for full_path, name in ((True, "full network"), (False, "frozen-prefix tail"))
               if full_path not in tflops]
    source = (f"the rates measured in {path} ({measured.get('device', '?')}, Keras {measured.get('backend', '?')}, "
              f"{precision}, {image_size} px, {len(rows)} rows): full network {full:.3g} TFLOP/s, frozen-prefix "
              f"tail {tail:.3g} TFLOP/s, plus {overhead_min:.2g} min per row"
              + (f"; no {missing[0]} row, the other path's rate used" if missing else ""))
    return Rates(full, tail, overhead_min, source)


def image_count(dataset: str, override: dict[str, int]) -> int | None:
    """Images of ``dataset``: as given, as prepared, or as published; None when unknown."""
    if dataset in override:
        return override[dataset]
    manifest = prepared.folder(dataset) / prepared.MANIFEST
    if manifest.exists():
        return len(pd.read_csv(manifest, usecols=["id"]))
    return PUBLISHED_IMAGES.get(dataset)


def cost_estimate(settings: Settings, strategies: list[float], *, images: dict[str, int],
                  rates: Rates) -> tuple[str, float]:
    """A table of the grid's arithmetic and hours, and the total hours (datasets of known size only).

    Per dataset x network x strategy: the multiply-adds per image of the frozen
    prefix and of the trained tail (:mod:`ultrasound_transfer.networks.cost`),
    the whole unit's work over folds and epochs with the prefix cached, and
    hours at the ``rates`` of its training path (two floating-point operations
    per multiply-add) plus their fixed minutes.
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
                tflops = rates.tflops(full_network=macs.prefix == 0)
                hours = 2 * work.total / (tflops * 1e12) / 3600 + rates.overhead_min / 60
                total_hours += hours
                rows.append(row + [f"{work.total / 1e15:.3g}", f"{hours:.2f}"])
    headers = ["dataset", "images", "network", "ft_fraction", "prefix GMAC/img", "tail GMAC/img", "PMAC", "hours"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), total_hours
