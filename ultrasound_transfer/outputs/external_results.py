"""``external``'s figures: ``metrics/external/<train>-to-<test>/<model>.*``.

* ``<model>.json`` (DVC metrics): the figures of ``train``'s study read on
  every image of ``test`` with intervals over ``test``'s groups, the gap to
  the internal figures, and the SHA-256 of the classifiers it applied
  (``classifiers_sha256``), so that a model card reports only external
  figures of the very classifiers it describes;
* ``<model>.predictions.csv``: per ``test`` image its keys and, per
  classifier, the columns of :mod:`ultrasound_transfer.outputs.cv_results`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ultrasound_transfer.common import read_json, write_atomic, write_json
from ultrasound_transfer.outputs.stages import stage_name

EXTERNAL_DIR = Path("metrics/external")


def stage(pair_index: int, model: str) -> str:
    """``external@pair<i>-<model>``: DVC names a matrix entry that is a mapping by its position in params external."""
    return stage_name("external", f"pair{pair_index}", model)


def folder(train: str, test: str) -> Path:
    return EXTERNAL_DIR / f"{train}-to-{test}"


def metrics_path(train: str, test: str, model: str) -> Path:
    return folder(train, test) / f"{model}.json"


def predictions_path(train: str, test: str, model: str) -> Path:
    return folder(train, test) / f"{model}.predictions.csv"


def load_metrics(train: str, test: str, model: str) -> dict:
    return read_json(metrics_path(train, test, model))


def write_results(train: str, test: str, model: str, *, metrics: dict, predictions: pd.DataFrame) -> None:
    write_atomic(predictions_path(train, test, model), lambda tmp: predictions.to_csv(tmp, index=False))
    write_json(metrics_path(train, test, model), metrics)
