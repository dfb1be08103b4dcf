"""What ``finetune`` wrote for each split, read as the classifiers need it.

``evaluate`` reads a dataset's own test folds from these files, and
``external`` refits each split's SVM and operating points from them to read
another dataset's images; both go through these functions, so both read the
same images in the same parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ultrasound_transfer.common import PipelineError, read_json
from ultrasound_transfer.paths import FEATURES_DIR, MODELS_DIR


@dataclass(frozen=True)
class TrainingRecord:
    """``models/<dataset>/<model>/training``: the dense head's predictions and which images each split used."""

    dense: pd.DataFrame        # id, fold, part (test, validation), true, prob_<class>...
    parts: pd.DataFrame        # id, fold, part (fit, validation, test)
    freezing: dict             # freezing.json's first fold: layers and parameters trained
    folder: Path


def load_training_record(dataset: str, model: str) -> TrainingRecord:
    """The training record of ``dataset`` x ``model``, which ``finetune`` writes."""
    folder = MODELS_DIR / dataset / model / "training"
    if not (folder / "fold_parts.csv").is_file():
        raise PipelineError(f"{folder / 'fold_parts.csv'} is missing; run 'dvc repro finetune@{dataset}-{model}'.")
    return TrainingRecord(dense=pd.read_csv(folder / "dense_predictions.csv"),
                          parts=pd.read_csv(folder / "fold_parts.csv"),
                          freezing=read_json(folder / "freezing.json")["folds"][0], folder=folder)


def load_fold_features(dataset: str, model: str, k: int, *, ids: np.ndarray, layer: str) -> np.ndarray:
    """Split k's ``layer`` features (``features.layer``) from ``finetune``, checked to be in manifest order."""
    path = FEATURES_DIR / dataset / model / f"fold{k}.npz"
    rerun = f"dvc repro finetune@{dataset}-{model}"
    if not path.exists():
        raise PipelineError(f"{path} is missing; run '{rerun}'.")
    with np.load(path, allow_pickle=False) as stored:
        if layer not in stored.files:
            raise PipelineError(f"{path} holds no '{layer}' features (it has {', '.join(stored.files)}); "
                                f"it was written by an older finetune: run '{rerun}'.")
        if not np.array_equal(stored["ids"], ids):
            raise PipelineError(f"{path} is not in the order of the manifest; run '{rerun}'.")
        return stored[layer]


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


def dense_probabilities(dense: pd.DataFrame, fold: int, part: str, ids: np.ndarray,
                        columns: list[str]) -> np.ndarray:
    """The dense head's probabilities of split ``fold``'s images ``ids`` in ``part``, in that order."""
    rows = dense[(dense["fold"] == fold) & (dense["part"] == part)].set_index("id")
    missing = set(ids) - set(rows.index)
    if missing:
        raise PipelineError(f"dense_predictions.csv has no {part} prediction of {len(missing)} images of split "
                            f"{fold}, e.g. {sorted(missing)[0]}; rerun the finetune stage.")
    return rows.loc[ids, columns].to_numpy(dtype=float)
