"""Reading a score as a decision: the operating point, and the SVM's scores as probabilities.

A classifier says "malignant" when its probability of malignant reaches a
threshold.  The study chooses that threshold per fold on the fold's inner
validation images, never on its test images (STARD 2015 item 12: the cut-off
is pre-specified, not fitted to the data it is reported on), by the rule
``evaluation.operating_point``:

* ``youden``: the threshold maximizing sensitivity + specificity - 1 (Youden,
  Cancer 3, 1950); among equally good thresholds, the middle one;
* ``sensitivity``: the highest threshold whose sensitivity reaches
  ``evaluation.target`` (a screening reading: miss few cancers);
* ``specificity``: the lowest threshold whose specificity reaches the target
  (a rule-in reading: few needless biopsies);
* ``argmax``: 0.5, which for two classes is the paper's argmax reading.

Candidate thresholds are the midpoints between consecutive distinct
validation scores, and one value beyond each end, so the choice does not sit
on a validation image's own score.

The SVM's decision values become probabilities by Platt scaling (Platt, in
Advances in Large Margin Classifiers, 1999), a logistic curve fitted on
images the SVM did not learn from, with Platt's smoothed targets, in the
numerically careful form of Lin, Lin & Weng (Machine Learning 68, 2007),
constrained to increase with the decision value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from ultrasound_transfer.choices import OPERATING_POINTS
from ultrasound_transfer.common import PipelineError, check_choice


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores, and one step beyond each end."""
    distinct = np.unique(np.asarray(scores, dtype=float))
    step = max(1e-6, float(np.ptp(distinct)) * 1e-3)
    return np.concatenate([[distinct[0] - step], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + step]])


def rates_at(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity at each threshold (malignant when score >= threshold)."""
    positive = np.asarray(scores)[None, :] >= np.asarray(thresholds)[:, None]
    malignant = np.asarray(labels) == 1
    return positive[:, malignant].mean(axis=1), (~positive[:, ~malignant]).mean(axis=1)


def choose_threshold(labels: np.ndarray, scores: np.ndarray, *, rule: str, target: float) -> float:
    """The threshold on the probability of malignant that ``rule`` picks on these (validation) images."""
    check_choice("evaluation.operating_point", rule, OPERATING_POINTS)
    if rule == "argmax":
        return 0.5
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise PipelineError(f"the operating point ({rule}) needs validation images of both classes, got only "
                            f"class {labels[0] if len(labels) else '(none)'}; raise finetune.validation_fraction.")
    thresholds = candidate_thresholds(scores)
    sensitivity, specificity = rates_at(labels, scores, thresholds)
    if rule == "youden":
        youden = sensitivity + specificity - 1
        tied = np.flatnonzero(np.isclose(youden, youden.max(), rtol=0, atol=1e-12))
        return float(thresholds[tied[(len(tied) - 1) // 2]])
    if rule == "sensitivity":
        return float(thresholds[np.flatnonzero(sensitivity >= target).max()])   # the lowest always reaches 1
    return float(thresholds[np.flatnonzero(specificity >= target).min()])      # the highest always reaches 1


@dataclass(frozen=True)
class PlattScaling:
    """``p(malignant) = 1 / (1 + exp(a * decision + b))``."""

    a: float
    b: float

    def probability(self, decision: np.ndarray) -> np.ndarray:
        z = self.a * np.asarray(decision, dtype=float) + self.b
        return np.exp(-np.logaddexp(0.0, z))


def fit_platt(decision: np.ndarray, labels: np.ndarray) -> PlattScaling:
    """Platt's sigmoid fitted to decision values of images the SVM did not learn from.

    The targets are smoothed, ``(N+ + 1)/(N+ + 2)`` for malignant and
    ``1/(N- + 2)`` for benign, so that separable validation scores do not
    drive the slope to infinity; ``a`` is kept below zero (at least 1e-6 per
    standard deviation of the decision values), so that a higher decision
    value always means a higher probability and a few unlucky calibration
    images can neither turn the SVM's ranking upside down nor flatten it.
    """
    decision, labels = np.asarray(decision, dtype=float), np.asarray(labels)
    n_pos, n_neg = int((labels == 1).sum()), int((labels != 1).sum())
    if not n_pos or not n_neg:
        raise PipelineError("Platt scaling needs calibration images of both classes; "
                            "raise finetune.validation_fraction.")
    target = np.where(labels == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * decision + ab[1]
        p = np.exp(-np.logaddexp(0.0, z))                 # 1 / (1 + e^z), stable for either sign
        value = np.sum(target * np.logaddexp(0.0, z) + (1 - target) * np.logaddexp(0.0, -z))
        dz = target - p                                   # d loss / d z
        return float(value), np.array([np.sum(dz * decision), np.sum(dz)])

    start = np.array([0.0, np.log((n_neg + 1) / (n_pos + 1))])
    # a < 0: the probability rises with the decision value, so calibration can neither reverse the ranking
    # nor flatten it into ties (on a few calibration images that happen to rank backwards, a would reach 0).
    steepest_flat = -1e-6 / max(float(np.std(decision)), 1e-12)
    result = optimize.minimize(loss, start, jac=True, method="L-BFGS-B",
                               bounds=[(None, steepest_flat), (None, None)])
    return PlattScaling(a=float(result.x[0]), b=float(result.x[1]))
