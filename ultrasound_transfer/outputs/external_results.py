"""``external``'s figures: ``metrics/external/<train>-to-<test>/<model>.*``.

* ``<model>.json`` (DVC metrics): ``image`` (and ``case``): the ensemble's
  figures (the deployed model) on every image of ``test``, with intervals
  over ``test``'s groups; ``gap``: internal and external split by split, each
  split's own network and classifiers, and their difference with its
  interval; and the SHA-256 of the classifiers it applied
  (``classifiers_sha256``), so that a model card reports only external
  figures of the very classifiers it describes;
* ``<model>.predictions.csv``: per ``test`` image its keys and, per
  classifier, the ensemble's columns of :mod:`ultrasound_transfer.outputs.cv_results`
  and each split's own probability (:func:`split_column`);
* ``metrics/plots/external_roc/<train>-to-<test>/<model>.csv`` and
  ``external_calibration/...``: the ensemble's ROC curve and reliability
  diagram on the target, for ``dvc plots``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ultrasound_transfer.choices import CLASSIFIERS
from ultrasound_transfer.common import read_json, write_atomic, write_json
from ultrasound_transfer.evaluation.calibration import reliability_table
from ultrasound_transfer.evaluation.scoring import roc_points
from ultrasound_transfer.outputs.cv_results import PLOTS_DIR, prob_column
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


def split_column(classifier: str, k: int) -> str:
    """Split ``k``'s own probability of malignant for a target image (its network and classifiers alone)."""
    return f"{classifier}_split{k}_prob_malignant"


def roc_path(train: str, test: str, model: str) -> Path:
    return PLOTS_DIR / "external_roc" / f"{train}-to-{test}" / f"{model}.csv"


def calibration_path(train: str, test: str, model: str) -> Path:
    return PLOTS_DIR / "external_calibration" / f"{train}-to-{test}" / f"{model}.csv"


def write_plot_data(train: str, test: str, model: str, predictions: pd.DataFrame, *, class_names: list[str],
                    bins: int) -> None:
    """The ensemble's ROC curve and reliability diagram on the target, per classifier, for ``dvc plots``."""
    curves = pd.concat([roc_points(predictions["true"].to_numpy(), predictions[[prob_column(c, n) for n in
                                                                                 class_names]].to_numpy(), c)
                        for c in CLASSIFIERS], ignore_index=True)
    diagram = pd.concat([reliability_table(predictions["true"].to_numpy(),
                                           predictions[prob_column(c, class_names[1])].to_numpy(), bins)
                         .assign(series=c) for c in CLASSIFIERS], ignore_index=True)
    write_atomic(roc_path(train, test, model), lambda tmp: curves.to_csv(tmp, index=False))
    write_atomic(calibration_path(train, test, model), lambda tmp: diagram.to_csv(tmp, index=False))


def load_metrics(train: str, test: str, model: str) -> dict:
    return read_json(metrics_path(train, test, model))


def write_results(train: str, test: str, model: str, *, metrics: dict, predictions: pd.DataFrame) -> None:
    write_atomic(predictions_path(train, test, model), lambda tmp: predictions.to_csv(tmp, index=False))
    write_json(metrics_path(train, test, model), metrics)
