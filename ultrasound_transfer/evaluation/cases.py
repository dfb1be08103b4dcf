"""Case-level (patient-level) predictions from the images of each case.

Where a case has several images (views of one nodule in DDTI, of one gland in
the salivary set, of one lesion in the phantom), a clinician's decision is per
case.  A case's probability of malignant is the mean of its images'
(``evaluation.case_score: mean``) or their maximum (``max``: the most
suspicious view decides), and it is read at its split's *case* operating
point: chosen, by the same rule as the image one, on the split's validation
*cases* scored the same way (:func:`case_threshold`), since a mean or a
maximum of several images is not distributed as one image's probability
(the maximum leans towards malignant), so an image threshold would misread
it.  A case lies in one test fold per repeat under grouped folds.

A case is counted once with its near-copies: the unit is the case joined
with the cases that share identical or near-duplicate images with it (the
``group`` of the manifest), so an annotated copy of a patient's frame filed
under another id does not count as a second patient.  A unit whose images
carry different labels has no single truth: it is left out of the
case-level figures and counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ultrasound_transfer.choices import CASE_SCORES
from ultrasound_transfer.common import PipelineError, check_choice
from ultrasound_transfer.evaluation.intervals import PooledPredictions, headline_with_intervals
from ultrasound_transfer.evaluation.operating_points import choose_threshold
from ultrasound_transfer.settings import EvaluationSettings


def case_scores(labels: np.ndarray, malignant: np.ndarray, *, units: np.ndarray,
                score: str) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (case) with a single label: its label and its score (the mean or max of its images')."""
    check_choice("evaluation.case_score", score, CASE_SCORES)
    table = pd.DataFrame({"unit": units, "label": labels, "malignant": malignant})
    summary = table.groupby("unit").agg(low=("label", "min"), high=("label", "max"), malignant=("malignant", score))
    single = summary[summary["low"] == summary["high"]]
    return single["low"].to_numpy(), single["malignant"].to_numpy(dtype=float)


def case_threshold(labels: np.ndarray, malignant: np.ndarray, *, units: np.ndarray,
                   evaluation: EvaluationSettings, argmax_threshold: float) -> float:
    """The case-level operating point of a split, chosen on its validation cases (their scores as the test cases'
    are made) by ``evaluation.operating_point``; under ``argmax``, the image threshold (``argmax_threshold``)."""
    if evaluation.operating_point == "argmax":
        return argmax_threshold
    case_labels, scores = case_scores(labels, malignant, units=units, score=evaluation.case_score)
    if len(np.unique(case_labels)) < 2:
        raise PipelineError(f"the case-level operating point needs validation cases of both classes, got "
                            f"{len(case_labels)} of one; raise finetune.validation_fraction.")
    return choose_threshold(case_labels, scores, rule=evaluation.operating_point, target=evaluation.target)


def has_multi_image_cases(cases: np.ndarray) -> bool:
    """Whether any case has more than one image (otherwise case level is image level)."""
    _, counts = np.unique(cases[cases != ""], return_counts=True)
    return bool(len(counts)) and int(counts.max()) > 1


def cases_straddle_folds(cases: np.ndarray, splits: np.ndarray, repeats: np.ndarray) -> bool:
    """Whether, in some repeat, one case's images are in more than one test fold (ungrouped folds)."""
    table = pd.DataFrame({"case": cases, "split": splits, "repeat": repeats})
    return bool((table.groupby(["repeat", "case"])["split"].nunique() > 1).any())


def case_predictions(pooled: PooledPredictions, *, cases: np.ndarray, score: str) -> tuple[PooledPredictions, int]:
    """One row per (repeat, case) of two-class pooled image predictions; and how many cases had mixed labels.

    Images without a case (empty) are their own case.
    """
    check_choice("evaluation.case_score", score, CASE_SCORES)
    own = np.array([f"(image {i})" for i in range(len(cases))])
    table = pd.DataFrame({"case": np.where(cases == "", own, cases), "repeat": pooled.repeats,
                          "label": pooled.labels, "malignant": pooled.probabilities[:, 1],
                          "threshold": pooled.thresholds, "group": pooled.groups})
    by_case = table.groupby(["repeat", "case"], sort=True)
    summary = by_case.agg(label_min=("label", "min"), label_max=("label", "max"), malignant=("malignant", score),
                          threshold=("threshold", "first"), group=("group", "first")).reset_index()
    mixed = summary["label_min"] != summary["label_max"]
    kept = summary[~mixed]
    n_mixed = int(summary.loc[mixed, "case"].nunique())
    malignant = kept["malignant"].to_numpy(dtype=float)
    return PooledPredictions(labels=kept["label_min"].to_numpy(), probabilities=np.column_stack([1 - malignant,
                                                                                                  malignant]),
                             thresholds=kept["threshold"].to_numpy(dtype=float), repeats=kept["repeat"].to_numpy(),
                             groups=kept["group"].to_numpy()), n_mixed


def case_headline(pooled: dict[str, PooledPredictions], *, cases: np.ndarray, case_score: str, options: dict) -> dict:
    """Per classifier, the headline figures of its case-level predictions (with intervals, as
    :func:`~ultrasound_transfer.evaluation.intervals.headline_with_intervals` takes ``options``), and
    ``cases_with_mixed_labels``."""
    by_case = {name: case_predictions(p, cases=cases, score=case_score) for name, p in pooled.items()}
    result = headline_with_intervals({name: p for name, (p, _) in by_case.items()}, **options)
    result["cases_with_mixed_labels"] = next(iter(by_case.values()))[1]
    return result
