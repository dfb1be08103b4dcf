"""``finetune``'s third output: ``data/features/<dataset>/<model>/fold<k>.npz``, the SVM's input.

Per split k, both feature layers of every image (manifest order, with their
``ids``) under that split's fine-tuned network: ``pooled`` (the global
average pool that feeds the head) and ``head`` (the head's hidden layer);
``evaluate`` reads the one ``features.layer`` names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.outputs.stages import repro
from ultrasound_transfer.outputs.training_record import stage

FEATURES_DIR = Path("data/features")


def folder(dataset: str, model: str) -> Path:
    return FEATURES_DIR / dataset / model


def fold_path(dataset: str, model: str, k: int) -> Path:
    return folder(dataset, model) / f"fold{k}.npz"


def write_fold(target: Path, k: int, *, ids: np.ndarray, layers: dict[str, np.ndarray]) -> None:
    """Split ``k``'s feature layers into ``target`` (the folder being written)."""
    np.savez(target / f"fold{k}.npz", ids=np.asarray(ids, dtype=str), **layers)


def load_fold_features(dataset: str, model: str, k: int, *, ids: np.ndarray, layer: str) -> np.ndarray:
    """Split k's ``layer`` features, checked to be in manifest order."""
    path = fold_path(dataset, model, k)
    rerun = repro(stage(dataset, model))
    if not path.exists():
        raise PipelineError(f"{path} is missing; run '{rerun}'.")
    with np.load(path, allow_pickle=False) as stored:
        if layer not in stored.files:
            raise PipelineError(f"{path} holds no '{layer}' features (it has {', '.join(stored.files)}); "
                                f"it was written by an older finetune: run '{rerun}'.")
        if not np.array_equal(stored["ids"], ids):
            raise PipelineError(f"{path} is not in the order of the manifest; run '{rerun}'.")
        return stored[layer]
