"""A trained dataset x network as one artifact: its fold networks, their recipe and their fitted classifiers.

``finetune`` writes the fold files and the recipe (``training/network.json``,
with each fold file's SHA-256); ``evaluate`` writes the classifiers
(``classifiers.json``, with the recipe's SHA-256) and the figures.  Loading
checks that these belong together, so that a command can never pair
networks with classifiers fitted on others, nor report figures of another
run:

* every fold file is the one the recipe records;
* the classifiers were fitted beside this recipe;
* the thresholds in ``evaluate``'s predictions table are those of the
  classifiers (the figures are theirs).

Every command reads the study from here.  ``params.yaml`` does not enter:
a parameter edited since the study was trained changes nothing a command
computes, and :func:`parameter_changes` names it, so that a person knows the
edit has not taken effect until the stages run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.outputs import classifiers as classifiers_output
from ultrasound_transfer.outputs import cv_results
from ultrasound_transfer.outputs.classifiers import StudyClassifiers, load_classifiers
from ultrasound_transfer.outputs.fold_networks import check_fold_files
from ultrasound_transfer.outputs.stages import repro
from ultrasound_transfer.outputs.training_record import NetworkRecipe, load_recipe, recipe_sha256


@dataclass(frozen=True)
class TrainedStudy:
    """One dataset x network as the pipeline left it: checked to belong together."""

    recipe: NetworkRecipe
    classifiers: StudyClassifiers
    fold_files: tuple[Path, ...]

    @property
    def rerun(self) -> str:
        """The command that trains and evaluates it again."""
        return repro(classifiers_output.stage(self.recipe.dataset, self.recipe.model))


def check_recorded_thresholds(dataset: str, model: str, classifiers: StudyClassifiers) -> None:
    """Refuse figures of another ``evaluate`` run: each split's thresholds in the predictions table must be the
    classifiers' own."""
    predictions = cv_results.load_predictions(dataset, model)
    for split in classifiers.splits:
        rows = predictions[predictions["split"] == split.k]
        recorded = {name: rows[cv_results.threshold_column(name)].to_numpy(dtype=float) for name in ("dense", "svm")}
        fitted = {"dense": split.dense.threshold, "svm": split.svm.threshold}
        if not len(rows) or any(not np.allclose(recorded[n], fitted[n], rtol=0, atol=1e-12, equal_nan=True)
                                for n in fitted):
            raise PipelineError(f"{cv_results.predictions_path(dataset, model)} and "
                                f"{classifiers_output.path(dataset, model)} come from different evaluate runs "
                                f"(split {split.k}'s thresholds differ); run "
                                f"'{repro(classifiers_output.stage(dataset, model))}'.")


def load_trained_study(dataset: str, model: str) -> TrainedStudy:
    """The artifact of ``dataset`` x ``model``, or a refusal naming what is missing or mismatched and the fix."""
    recipe = load_recipe(dataset, model)
    classifiers = load_classifiers(dataset, model)
    rerun = repro(classifiers_output.stage(dataset, model))
    if classifiers.recipe_sha256 != recipe_sha256(dataset, model):
        raise PipelineError(f"{classifiers_output.path(dataset, model)} was fitted beside other fold networks than "
                            f"those of models/{dataset}/{model}/training/network.json (finetune ran again after "
                            f"evaluate); run '{rerun}'.")
    if len(classifiers.splits) != recipe.splits:
        raise PipelineError(f"{classifiers_output.path(dataset, model)} holds {len(classifiers.splits)} splits, "
                            f"the fold networks {recipe.splits}; run '{rerun}'.")
    files = tuple(check_fold_files(recipe))
    check_recorded_thresholds(dataset, model, classifiers)
    return TrainedStudy(recipe, classifiers, files)


def nested_value(params: dict, dotted: str):
    """``params["a"]["b"]`` for ``"a.b"``; None where any level is missing."""
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def changed_values(recorded, current, key: str) -> list[str]:
    """``key X then, Y now`` for every leaf of ``recorded`` that ``current`` does not match."""
    if isinstance(recorded, dict):
        current = current if isinstance(current, dict) else {}
        return [change for name, value in recorded.items()
                for change in changed_values(value, current.get(name), f"{key}.{name}")]
    return [] if recorded == current else [f"{key} {recorded!r} then, {current!r} now"]


def recorded_params(study: TrainedStudy) -> dict:
    """The parameters the study was made under: ``finetune``'s (and the preprocessing's), then ``evaluate``'s."""
    return {**study.recipe.provenance.get("params", {}), **study.classifiers.provenance.get("params", {})}


def parameter_changes(study: TrainedStudy, params: dict) -> list[str]:
    """Every parameter the study was made under that ``params`` (today's ``params.yaml``) sets otherwise."""
    return [change for key, value in recorded_params(study).items()
            for change in changed_values(value, nested_value(params, key), key)]
