"""Case-level (patient-level) predictions from the images of each case.

Where a case has several images (views of one nodule in DDTI, of one gland in
the salivary set, of one lesion in the phantom), a clinician's decision is per
case.  A case's probability of malignant is the mean of its images'
(``evaluation.case_score: mean``) or their maximum (``max``: the most
suspicious view decides), and it is read at its fold's operating point (a
case lies in one test fold per repeat under grouped folds).  A case whose
images carry different labels has no single truth: it is left out of the
case-level figures and counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ultrasound_transfer.choices import CASE_SCORES
from ultrasound_transfer.common import check_choice
from ultrasound_transfer.evaluation.intervals import PooledPredictions, headline_with_intervals


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
