"""``finetune``'s record of each dataset x network: ``models/<dataset>/<model>/training/``.

* ``network.json``: the recipe (:class:`NetworkRecipe`): everything that
  rebuilds the fold networks and feeds them a frame (network, classes,
  preprocessing, initial weights, ``ft_fraction``, head, batch-norm mode,
  precision, seed, the frozen part's fingerprint, each fold file's SHA-256,
  the cross-validation it was trained in), and where it came from (the parameters, the code revision, the data's
  hashes).  Every command reads the trained study through it, never through
  today's ``params.yaml``;
* ``dense_predictions.csv``: the dense head's class probabilities (``prob_<class>``)
  of each split's test images and inner validation images (``part``);
* ``fold_parts.csv``: per split, which images the head was fitted on
  (``fit``), stopped early on (``validation``) and tested on (``test``);
* ``history.csv``: per split and epoch, loss and accuracy;
* ``freezing.json``: per split, the layers and parameters trained, and the
  training path taken;

and, for ``dvc plots``, ``metrics/plots/training_{loss,accuracy}/<dataset>/<model>.csv``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ultrasound_transfer.common import PipelineError, read_json, write_atomic, write_json
from ultrasound_transfer.outputs.prepared import Preprocessing
from ultrasound_transfer.outputs.provenance import file_sha256
from ultrasound_transfer.outputs.stages import repro, stage_name
from ultrasound_transfer.settings import HeadSettings

MODELS_DIR = Path("models")
PLOTS_DIR = Path("metrics/plots")
RECIPE, DENSE_PREDICTIONS, FOLD_PARTS, HISTORY, FREEZING = ("network.json", "dense_predictions.csv",
                                                           "fold_parts.csv", "history.csv", "freezing.json")
PARTS = ("fit", "validation", "test")


STAGE = "finetune"


def stage(dataset: str, model: str) -> str:
    return stage_name(STAGE, dataset, model)


def folder(dataset: str, model: str) -> Path:
    return MODELS_DIR / dataset / model / "training"


def curves_path(metric: str, dataset: str, model: str) -> Path:
    return PLOTS_DIR / f"training_{metric}" / dataset / f"{model}.csv"


def prob_column(class_name: str) -> str:
    """``dense_predictions.csv``'s column of one class's probability."""
    return f"prob_{class_name}"


@dataclass(frozen=True)
class NetworkRecipe:
    """What rebuilds one dataset x network's fold networks and feeds them a frame (``network.json``)."""

    dataset: str
    model: str
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    weights: str                  # the backbone's initial weights: imagenet, none, or a file
    ft_fraction: float
    head: HeadSettings
    batch_norm: str
    precision: str
    seed: int
    deterministic_ops: bool
    frozen_sha256: str            # the frozen part every fold trained on (networks.fold_weights)
    fold_sha256: tuple[str, ...]  # SHA-256 of weights/fold<k>.weights.npz, k = 1, 2, ...
    backend: str                  # the Keras backend that trained the folds
    keras: str
    folds: dict = field(default_factory=dict)        # the cross-validation: n_splits, repeats, grouping, seed...
    # How the network's input is preprocessed (choices.INPUT_PREPROCESSINGS): keras, or a weights file's declared one
    input_preprocessing: str = "keras"
    weights_sha256: str = ""      # the weights file's SHA-256 (none for imagenet and none: Keras checks its own)
    provenance: dict = field(default_factory=dict)   # params, code revision, data hashes

    @property
    def splits(self) -> int:
        return len(self.fold_sha256)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkRecipe:
        return cls(**{**data, "class_names": tuple(data["class_names"]),
                      "preprocessing": Preprocessing(**data["preprocessing"]), "head": HeadSettings(**data["head"]),
                      "fold_sha256": tuple(data["fold_sha256"])})


def recipe_sha256(dataset: str, model: str) -> str:
    """The recipe file's SHA-256: what ``evaluate``'s classifiers record they were fitted beside."""
    return file_sha256(folder(dataset, model) / RECIPE)


def load_recipe(dataset: str, model: str) -> NetworkRecipe:
    path = folder(dataset, model) / RECIPE
    if not path.is_file():
        raise PipelineError(f"{path} is missing: {dataset} x {model} was not trained here, or by an older "
                            f"finetune; run '{repro(stage(dataset, model))}'.")
    try:
        return NetworkRecipe.from_dict(read_json(path))
    except (TypeError, KeyError) as error:
        raise PipelineError(f"{path} is not a network recipe this version reads ({error}); "
                            f"run '{repro(stage(dataset, model))}'.") from None


@dataclass(frozen=True)
class TrainingRecord:
    """The dense head's predictions and which images each split used."""

    dataset: str
    model: str
    dense: pd.DataFrame        # id, fold, part (test, validation), true, prob_<class>...
    parts: pd.DataFrame        # id, fold, part (fit, validation, test)
    freezing: dict             # freezing.json's first fold: layers and parameters trained
    folder: Path


def load_record(dataset: str, model: str) -> TrainingRecord:
    where = folder(dataset, model)
    if not (where / FOLD_PARTS).is_file():
        raise PipelineError(f"{where / FOLD_PARTS} is missing; run '{repro(stage(dataset, model))}'.")
    return TrainingRecord(dataset=dataset, model=model, dense=pd.read_csv(where / DENSE_PREDICTIONS),
                          parts=pd.read_csv(where / FOLD_PARTS), freezing=read_json(where / FREEZING)["folds"][0],
                          folder=where)


def part_rows(parts: pd.DataFrame, fold: int, ids: np.ndarray, *names: str) -> np.ndarray:
    """Positions (in manifest order) of split ``fold``'s images in the named parts of ``fold_parts.csv``."""
    chosen = set(parts.loc[(parts["fold"] == fold) & parts["part"].isin(names), "id"])
    return np.flatnonzero(np.isin(ids, list(chosen)))


def svm_training_rows(parts: pd.DataFrame, fold: int, ids: np.ndarray, train_on: str) -> np.ndarray:
    """Positions of the images the SVM of ``fold`` learns from.

    ``fit``: exactly the images the dense head was fitted on, so both
    classifiers learn from the same labelled images; ``training``: the whole
    training part, the dense head's early-stopping images included.
    """
    return part_rows(parts, fold, ids, *(("fit",) if train_on == "fit" else ("fit", "validation")))


def dense_probabilities(record: TrainingRecord, fold: int, part: str, ids: np.ndarray,
                        class_names: list[str]) -> np.ndarray:
    """The dense head's probabilities of split ``fold``'s images ``ids`` in ``part``, in that order."""
    dense = record.dense
    rows = dense[(dense["fold"] == fold) & (dense["part"] == part)].set_index("id")
    missing = set(ids) - set(rows.index)
    if missing:
        raise PipelineError(f"{record.folder / DENSE_PREDICTIONS} has no {part} prediction of {len(missing)} "
                            f"images of split {fold}, e.g. {sorted(missing)[0]}; rerun the finetune stage.")
    return rows.loc[ids, [prob_column(c) for c in class_names]].to_numpy(dtype=float)


def predictions_table(ids: np.ndarray, fold: int, *, part: str, labels: np.ndarray, probabilities: np.ndarray,
                      class_names: list[str]) -> pd.DataFrame:
    """Rows of ``dense_predictions.csv`` for one split's ``part``: id, fold, part, true label, one column per class."""
    table = pd.DataFrame({"id": np.asarray(ids), "fold": fold, "part": part, "true": labels})
    for c, name in enumerate(class_names):
        table[prob_column(name)] = probabilities[:, c]
    return table


def parts_table(ids: np.ndarray, fold: int, parts: dict[str, np.ndarray]) -> pd.DataFrame:
    """Rows of ``fold_parts.csv`` for one split: which images it fitted on, validated on and tested on."""
    return pd.concat([pd.DataFrame({"id": np.asarray(ids)[rows], "fold": fold, "part": part})
                      for part, rows in parts.items()], ignore_index=True)


def history_table(history: dict[str, list[float]], fold: int) -> pd.DataFrame:
    """Keras history of one split as rows of ``history.csv`` (fold, epoch, metrics...)."""
    table = pd.DataFrame(history)
    table.insert(0, "epoch", np.arange(1, len(table) + 1))
    table.insert(0, "fold", fold)
    return table


def training_curves(history: pd.DataFrame) -> pd.DataFrame:
    """History as rows (epoch, loss, accuracy, series), one series per split and part."""
    tables = []
    for part, prefix in (("train", ""), ("validation", "val_")):
        if f"{prefix}loss" not in history:
            continue
        table = history[["fold", "epoch", f"{prefix}loss", f"{prefix}accuracy"]].copy()
        table.columns = ["fold", "epoch", "loss", "accuracy"]
        table["series"] = [f"fold {k} {part}" for k in table["fold"]]
        tables.append(table.drop(columns="fold"))
    return pd.concat(tables, ignore_index=True)


def write_record(target: Path, *, recipe: NetworkRecipe, history: pd.DataFrame, dense_predictions: pd.DataFrame,
                 parts: pd.DataFrame, freezing: dict) -> None:
    """Every file of the record into ``target`` (the folder being written)."""
    history.to_csv(target / HISTORY, index=False)
    dense_predictions.to_csv(target / DENSE_PREDICTIONS, index=False)
    parts.to_csv(target / FOLD_PARTS, index=False)
    write_json(target / FREEZING, freezing)
    # Sorted keys and repr floats: the same recipe is the same file, byte for byte.
    (target / RECIPE).write_text(json.dumps(recipe.as_dict(), indent=2, sort_keys=True) + "\n")


def write_curves(dataset: str, model: str, history: pd.DataFrame) -> None:
    """The training curves in the long form ``dvc plots`` draws."""
    curves = training_curves(history)
    for metric in ("loss", "accuracy"):
        write_atomic(curves_path(metric, dataset, model),
                     lambda tmp, m=metric: curves[["epoch", m, "series"]].to_csv(tmp, index=False))
