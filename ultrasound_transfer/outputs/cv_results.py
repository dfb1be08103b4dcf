"""``evaluate``'s figures: ``metrics/cv/<dataset>/<model>.*`` and the data ``dvc plots`` draws.

* ``<model>.json`` (DVC metrics): headline figures with intervals (``image``,
  ``case``), per-split means (``folds``), the operating-point rule, repeats,
  the freezing facts;
* ``<model>.folds.csv``: every metric per split and classifier;
* ``<model>.predictions.csv``: one row per test image and split,
  :data:`KEYS` and per classifier its probabilities, threshold, the class
  called at the threshold and the argmax class (:func:`prob_column` ...), and
  the dense head's raw softmax beside its calibrated reading (:data:`RAW_DENSE`);
* ``metrics/plots/confusion/<dataset>/<model>.<classifier>.csv``,
  ``metrics/plots/roc/<dataset>/<model>.csv`` and
  ``metrics/plots/calibration/<dataset>/<model>.csv``.

The predictions table's per-classifier columns are also those of the
external stage's table and of ``predict``'s CSV (one spelling, here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ultrasound_transfer.choices import CLASSIFIERS
from ultrasound_transfer.common import PipelineError, read_json, write_atomic, write_json
from ultrasound_transfer.evaluation.calibration import reliability_table
from ultrasound_transfer.evaluation.intervals import PooledPredictions
from ultrasound_transfer.evaluation.scoring import roc_points
from ultrasound_transfer.outputs.stages import repro, stage_name

METRICS_DIR = Path("metrics/cv")
PLOTS_DIR = Path("metrics/plots")
# Columns of every row of a predictions table, before the classifiers' own.
KEYS = ("id", "repeat", "fold", "split", "true", "true_class", "group", "case")
# The dense head read by its raw softmax, as the paper reads it: columns and figures kept beside the calibrated
# head's where it is recalibrated (evaluation.dense_calibration: platt), labelled, never what is compared.
RAW_DENSE = "dense_raw"
RELIABILITY_COLUMNS = ("bin_low", "bin_high", "mean_predicted", "observed_fraction", "count", "series")


def stage(dataset: str, model: str) -> str:
    return stage_name("evaluate", dataset, model)


def metrics_path(dataset: str, model: str) -> Path:
    return METRICS_DIR / dataset / f"{model}.json"


def folds_path(dataset: str, model: str) -> Path:
    return METRICS_DIR / dataset / f"{model}.folds.csv"


def predictions_path(dataset: str, model: str) -> Path:
    return METRICS_DIR / dataset / f"{model}.predictions.csv"


def confusion_path(dataset: str, model: str, classifier: str) -> Path:
    return PLOTS_DIR / "confusion" / dataset / f"{model}.{classifier}.csv"


def roc_path(dataset: str, model: str) -> Path:
    return PLOTS_DIR / "roc" / dataset / f"{model}.csv"


def calibration_path(dataset: str, model: str) -> Path:
    return PLOTS_DIR / "calibration" / dataset / f"{model}.csv"


def prob_column(classifier: str, class_name: str) -> str:
    """A classifier's probability of one class (for more than two classes, the SVM's decision value)."""
    return f"{classifier}_prob_{class_name}"


def threshold_column(classifier: str) -> str:
    return f"{classifier}_threshold"


def case_threshold_column(classifier: str) -> str:
    """The split's case-level operating point, chosen on its validation cases (evaluation.cases)."""
    return f"{classifier}_case_threshold"


def class_column(classifier: str) -> str:
    """The class called at the operating point (argmax for more than two classes)."""
    return f"{classifier}_class"


def argmax_column(classifier: str) -> str:
    """The class of the highest score: the paper's reading."""
    return f"{classifier}_argmax_class"


def add_classifier_columns(table: pd.DataFrame, classifier: str, *, probabilities: np.ndarray, thresholds,
                           called: np.ndarray, class_names: list[str], argmax: np.ndarray | None = None) -> None:
    """One classifier's columns, in place: probabilities, threshold, called class (and argmax class)."""
    for c, class_name in enumerate(class_names):
        table[prob_column(classifier, class_name)] = probabilities[:, c]
    table[threshold_column(classifier)] = thresholds
    table[class_column(classifier)] = [class_names[c] for c in called]
    if argmax is not None:
        table[argmax_column(classifier)] = [class_names[c] for c in argmax]


def pooled_from_table(predictions: pd.DataFrame, classifier: str, class_names: list[str], *,
                      level: str = "image") -> PooledPredictions:
    """A classifier's pooled predictions from a predictions table (``evaluate``'s or ``external``'s), with the
    thresholds of its images (``level="image"``) or of its cases (``"case"``)."""
    thresholds = threshold_column(classifier) if level == "image" else case_threshold_column(classifier)
    return PooledPredictions(
        labels=predictions["true"].to_numpy(),
        probabilities=predictions[[prob_column(classifier, c) for c in class_names]].to_numpy(dtype=float),
        thresholds=predictions[thresholds].to_numpy(dtype=float),
        repeats=predictions["repeat"].to_numpy(), groups=predictions["group"].astype(str).to_numpy())


def malignant_view(predictions: pd.DataFrame, classifier: str, *, malignant: str) -> pd.DataFrame:
    """``id``, ``truly_malignant``, ``probability`` (of malignant) and ``called_malignant`` of one classifier."""
    return pd.DataFrame({"id": predictions["id"], "truly_malignant": predictions["true_class"] == malignant,
                         "probability": predictions[prob_column(classifier, malignant)].astype(float),
                         "called_malignant": predictions[class_column(classifier)] == malignant})


def load_predictions(dataset: str, model: str) -> pd.DataFrame:
    path = predictions_path(dataset, model)
    if not path.is_file():
        raise PipelineError(f"{path} is missing; run '{repro(stage(dataset, model))}'.")
    return pd.read_csv(path, dtype={"group": str, "case": str}, keep_default_na=False)


def load_split_metrics(dataset: str, model: str) -> pd.DataFrame:
    return pd.read_csv(folds_path(dataset, model))


def load_metrics(dataset: str, model: str) -> dict:
    path = metrics_path(dataset, model)
    if not path.is_file():
        raise PipelineError(f"{path} is missing; run '{repro(stage(dataset, model))}'.")
    return read_json(path)


def write_results(dataset: str, model: str, *, metrics: dict, split_metrics: pd.DataFrame,
                  predictions: pd.DataFrame) -> None:
    """The figures, the per-split table and the predictions table."""
    write_atomic(folds_path(dataset, model), lambda tmp: split_metrics.to_csv(tmp, index=False))
    write_atomic(predictions_path(dataset, model), lambda tmp: predictions.to_csv(tmp, index=False))
    write_json(metrics_path(dataset, model), metrics)


def write_plot_data(dataset: str, model: str, predictions: pd.DataFrame, *, class_names: list[str],
                    bins: int) -> None:
    """Confusion, ROC and reliability data of both classifiers, in the forms ``dvc plots`` draws."""
    curves, reliability = [], []
    for classifier in CLASSIFIERS:
        confusion = pd.DataFrame({"actual": predictions["true_class"],
                                  "predicted": predictions[class_column(classifier)]})
        write_atomic(confusion_path(dataset, model, classifier),
                     lambda tmp, table=confusion: table.to_csv(tmp, index=False))
        scores = predictions[[prob_column(classifier, name) for name in class_names]].to_numpy()
        curves.append(roc_points(predictions["true"].to_numpy(), scores, classifier))
    for classifier in (*CLASSIFIERS, RAW_DENSE):
        if len(class_names) == 2 and prob_column(classifier, class_names[1]) in predictions:
            table = reliability_table(predictions["true"].to_numpy(),
                                      predictions[prob_column(classifier, class_names[1])].to_numpy(), bins)
            reliability.append(table.assign(series=classifier))
    roc = pd.concat(curves, ignore_index=True)
    write_atomic(roc_path(dataset, model), lambda tmp: roc.to_csv(tmp, index=False))
    diagram = (pd.concat(reliability, ignore_index=True) if reliability else
               pd.DataFrame(columns=list(RELIABILITY_COLUMNS)))
    write_atomic(calibration_path(dataset, model), lambda tmp: diagram.to_csv(tmp, index=False))
