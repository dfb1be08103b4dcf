"""``evaluate``'s fitted classifiers: ``models/<dataset>/<model>/classifiers.json``.

Everything ``evaluate`` fits beside each split's fine-tuned network, kept so
that every later reading of the study (``external``, ``predict``,
``explain``, ``export``) applies the very objects whose figures
``evaluate`` reported, and never fits them again:

* per split: the dense head's Platt scaling and operating points (image and
  case); the linear SVM (its C, the
  standardization of its input, weights and intercept), its Platt scaling
  and operating points; the novelty reference (the training images' feature
  mean and shrunk scale, the held-out images' median novelty:
  :mod:`ultrasound_transfer.evaluation.novelty`);
* the feature layer the SVMs read, the operating-point rule, the novelty
  threshold;
* the SHA-256 of the network recipe (``training/network.json``) they were
  fitted beside, so that classifiers are never paired with networks they
  were not fitted on; and the parameters and code revision.

Why JSON: a linear SVM is a few arrays of numbers, which JSON holds exactly
(Python writes each float so that it reads back bit for bit), readable and
diffable; a pickle would run code when loaded and tie the file to the
scikit-learn version that wrote it.  Loading rebuilds scikit-learn's own
objects with those values (:func:`ultrasound_transfer.evaluation.svm.svm_from_arrays`),
and a test checks that they reproduce ``evaluate``'s recorded predictions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ultrasound_transfer.common import PipelineError, read_json, write_atomic
from ultrasound_transfer.evaluation.classifiers import FittedDense, FittedSvm, SplitClassifiers
from ultrasound_transfer.evaluation.novelty import NoveltyReference
from ultrasound_transfer.evaluation.operating_points import PlattScaling
from ultrasound_transfer.evaluation.svm import svm_arrays, svm_from_arrays
from ultrasound_transfer.outputs.stages import repro, stage_name
from ultrasound_transfer.outputs.training_record import MODELS_DIR

FORMAT_VERSION = 2       # 2: the dense head's Platt scaling, both classifiers' case thresholds


def stage(dataset: str, model: str) -> str:
    return stage_name("evaluate", dataset, model)


def path(dataset: str, model: str) -> Path:
    return MODELS_DIR / dataset / model / "classifiers.json"


@dataclass(frozen=True)
class StudyClassifiers:
    """Every split's fitted classifiers of one dataset x network, and how they are read."""

    splits: tuple[SplitClassifiers, ...]
    feature_layer: str            # the layer the SVMs read: pooled or head (params features.layer)
    operating_point: str          # the rule that chose every threshold (params evaluation.operating_point)
    target: float                 # its target, for sensitivity and specificity
    novelty_threshold: float      # a frame above it is flagged (evaluation.novelty)
    recipe_sha256: str            # of the training/network.json the classifiers were fitted beside
    provenance: dict = field(default_factory=dict)

    @property
    def thresholds(self) -> dict[str, float]:
        """Per classifier, the ensemble's operating point: the mean of the splits' thresholds."""
        return {"dense": float(np.mean([s.dense.threshold for s in self.splits])),
                "svm": float(np.mean([s.svm.threshold for s in self.splits]))}

    @property
    def case_thresholds(self) -> dict[str, float]:
        """Per classifier, the mean of the splits' case-level operating points (NaN where no case level)."""
        return {"dense": float(np.mean([s.dense.case_threshold for s in self.splits])),
                "svm": float(np.mean([s.svm.case_threshold for s in self.splits]))}

    @property
    def dense_calibrated(self) -> bool:
        """Whether the dense head is read through its Platt scaling (evaluation.dense_calibration: platt)."""
        return all(s.dense.platt is not None for s in self.splits)


def number(value: float) -> float | None:
    """JSON has no NaN: an undefined threshold (more than two classes) is written as null."""
    return None if value is None or math.isnan(value) else float(value)


def nan_if_null(value: float | None) -> float:
    return np.nan if value is None else float(value)


def platt_record(platt: PlattScaling | None) -> dict | None:
    return None if platt is None else {"a": platt.a, "b": platt.b}


def platt_from_record(record: dict | None) -> PlattScaling | None:
    return None if record is None else PlattScaling(a=float(record["a"]), b=float(record["b"]))


def split_record(split: SplitClassifiers) -> dict:
    svm, dense = split.svm, split.dense
    return {"split": split.k,
            "dense": {"threshold": number(dense.threshold), "case_threshold": number(dense.case_threshold),
                      "n_train": dense.n_train, "platt": platt_record(dense.platt)},
            "svm": {"threshold": number(svm.threshold), "case_threshold": number(svm.case_threshold),
                    "n_train": svm.n_train, "platt": platt_record(svm.platt), **svm_arrays(svm.model)},
            "novelty": {"mean": split.novelty.mean.tolist(), "scale": split.novelty.scale.tolist(),
                        "median": split.novelty.median}}


def split_from_record(record: dict) -> SplitClassifiers:
    svm, dense = record["svm"], record["dense"]
    model = svm_from_arrays(svm)
    return SplitClassifiers(
        k=int(record["split"]), dense=FittedDense(nan_if_null(dense["threshold"]), int(dense["n_train"]),
                                                  platt_from_record(dense["platt"]),
                                                  nan_if_null(dense["case_threshold"])),
        svm=FittedSvm(model, len(svm["classes"]), platt_from_record(svm["platt"]), nan_if_null(svm["threshold"]),
                      int(svm["n_train"]), nan_if_null(svm["case_threshold"])),
        novelty=NoveltyReference(mean=np.asarray(record["novelty"]["mean"], dtype=np.float64),
                                 scale=np.asarray(record["novelty"]["scale"], dtype=np.float64),
                                 median=float(record["novelty"]["median"])))


def write_classifiers(dataset: str, model: str, classifiers: StudyClassifiers) -> None:
    record = {"format": FORMAT_VERSION, "dataset": dataset, "model": model,
              "recipe_sha256": classifiers.recipe_sha256, "feature_layer": classifiers.feature_layer,
              "operating_point": classifiers.operating_point, "target": classifiers.target,
              "novelty_threshold": classifiers.novelty_threshold,
              "splits": [split_record(s) for s in classifiers.splits], "provenance": classifiers.provenance}
    text = json.dumps(record, indent=1, allow_nan=False) + "\n"
    write_atomic(path(dataset, model), lambda tmp: tmp.write_text(text))


def load_classifiers(dataset: str, model: str) -> StudyClassifiers:
    where = path(dataset, model)
    rerun = repro(stage(dataset, model))
    if not where.is_file():
        raise PipelineError(f"{where} is missing: {dataset} x {model} was not evaluated here, or by an older "
                            f"evaluate; run '{rerun}'.")
    record = read_json(where)
    if record.get("format") != FORMAT_VERSION:
        raise PipelineError(f"{where} is of format {record.get('format')!r}, this version reads "
                            f"{FORMAT_VERSION}; run '{rerun}'.")
    try:
        splits = tuple(split_from_record(s) for s in record["splits"])
        return StudyClassifiers(splits=splits, feature_layer=record["feature_layer"],
                                operating_point=record["operating_point"], target=float(record["target"]),
                                novelty_threshold=float(record["novelty_threshold"]),
                                recipe_sha256=record["recipe_sha256"], provenance=record.get("provenance", {}))
    except (KeyError, TypeError, ValueError) as error:
        raise PipelineError(f"{where} is damaged or incomplete ({type(error).__name__}: {error}); "
                            f"run '{rerun}'.") from None
