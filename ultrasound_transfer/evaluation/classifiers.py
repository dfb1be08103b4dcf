"""The two classifiers of one cross-validation split, each read at its own operating point.

Both are read the same way: a probability of malignant, and a threshold on
it chosen on images neither classifier was tested on
(:mod:`ultrasound_transfer.evaluation.operating_points`).

* The dense head: its softmax's log-odds, turned into probabilities by Platt
  scaling fitted on the fold's inner validation images (those ``finetune``
  stopped early on; ``evaluation.dense_calibration: none`` keeps the raw
  softmax, the paper's reading), and its threshold chosen on those
  probabilities.
* The SVM: its decision values, turned into probabilities by Platt scaling
  fitted on the same validation images, which it did not learn from (see
  :func:`ultrasound_transfer.evaluation.svm.calibration_decisions` for the
  other cases), and its threshold chosen on those probabilities.

So both are calibrated alike, by the same map on the same images, and their
probabilities, Brier scores and calibration errors compare like with like;
a raw softmax pooled over splits would also be penalised for scores that
drift between splits, which its per-split ranking does not show.  Platt
scaling (two parameters, increasing) rather than temperature scaling (Guo et
al., ICML 2017; one parameter, no intercept): the SVM needs an intercept,
and one map for both keeps the comparison a comparison of classifiers.  It
keeps each split's ranking, so per-split ROC-AUC is the raw one.  Under
``argmax`` each threshold is the probability the map gives the raw
decision point (softmax 0.5, decision value 0), so that both read as the
paper reads them.

For two classes the paper's argmax reading is kept beside the operating
point's, under ``argmax_`` names.  For more than two classes there is no
positive class, so no threshold and no Platt scaling: both are read by argmax
under the plain names, and the SVM's score columns are its decision values
(ranked, never averaged as probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline

from ultrasound_transfer.evaluation.calibration import brier_score
from ultrasound_transfer.evaluation.cases import case_threshold
from ultrasound_transfer.evaluation.novelty import NoveltyReference
from ultrasound_transfer.evaluation.operating_points import PlattScaling, choose_threshold, fit_platt
from ultrasound_transfer.evaluation.scoring import classification_metrics, roc_auc, threshold_metrics
from ultrasound_transfer.evaluation.svm import calibration_decisions, chosen_C, fit_svm, per_class_scores
from ultrasound_transfer.settings import EvaluationSettings, SvmSettings

# The argmax metrics kept beside the operating point's, under argmax_<name>, for the paper's tables.
ARGMAX_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")


@dataclass(frozen=True)
class SplitReading:
    """One classifier on the test images of one split."""

    probabilities: np.ndarray    # (n_test, n_classes); two classes: column 1 the probability of malignant
    threshold: float             # on the probability of malignant; NaN for more than two classes
    argmax: np.ndarray           # the paper's predicted class of each test image
    n_train: int                 # images it learned from
    ranking: np.ndarray | None = None   # scores its ROC-AUC ranks, when not the probabilities (SVM decision values)
    C: float = np.nan            # the SVM's C

    @property
    def called(self) -> np.ndarray:
        """Predicted class at the operating point (argmax for more than two classes)."""
        if np.isnan(self.threshold):
            return self.argmax
        return (self.probabilities[:, 1] >= self.threshold).astype(int)


def two_columns(malignant: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - malignant, malignant])


def log_odds(probabilities: np.ndarray) -> np.ndarray:
    """The malignant log-odds of two-class softmax probabilities, ``log p1 - log p0`` (kept finite)."""
    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, 1.0)
    return np.log(clipped[:, 1]) - np.log(clipped[:, 0])


@dataclass(frozen=True)
class FittedDense:
    """One split's dense head as the study reads it: its softmax, recalibrated (or not), at its operating point."""

    threshold: float                 # on the (calibrated) probability of malignant; NaN for > 2 classes
    n_train: int                     # images the network was fitted on
    platt: PlattScaling | None = None   # on the head's log-odds; None: the raw softmax (or > 2 classes)
    case_threshold: float = np.nan   # on a case's score, chosen on validation cases (evaluation.cases); NaN: none

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """The head's probabilities (N, n_classes) as the study reads them: Platt-scaled log-odds, or as they are."""
        if self.platt is None:
            return probabilities
        return two_columns(self.platt.probability(log_odds(probabilities)))

    def read(self, probabilities: np.ndarray) -> SplitReading:
        """The head on images whose softmax probabilities (N, n_classes) the split's network gave; ranked by the
        raw log-odds (which the calibration keeps in order), argmax on the raw softmax, as the paper reads it."""
        ranking = None if self.platt is None else np.column_stack([-log_odds(probabilities), log_odds(probabilities)])
        return SplitReading(self.calibrated(probabilities), self.threshold, probabilities.argmax(axis=1),
                            self.n_train, ranking=ranking)


def operating_points(labels: np.ndarray, malignant: np.ndarray, *, argmax_threshold: float,
                     evaluation: EvaluationSettings, cases: np.ndarray | None) -> tuple[float, float]:
    """The image and case operating points of a classifier, chosen on ``malignant``, its calibrated probabilities
    of images it did not learn from: ``argmax_threshold`` (the classifier's own reading) under
    ``evaluation.operating_point: argmax``, else that rule's threshold; the case one only where ``cases`` (each
    image's case unit) is given, NaN otherwise."""
    if evaluation.operating_point == "argmax":
        threshold = argmax_threshold
    else:
        threshold = choose_threshold(labels, malignant, rule=evaluation.operating_point, target=evaluation.target)
    by_case = (np.nan if cases is None else
               case_threshold(labels, malignant, units=cases, evaluation=evaluation, argmax_threshold=threshold))
    return threshold, by_case


def fit_dense_reading(validation_labels: np.ndarray, validation_probabilities: np.ndarray, *, n_train: int,
                      evaluation: EvaluationSettings, validation_cases: np.ndarray | None = None) -> FittedDense:
    """The dense head's calibration (``evaluation.dense_calibration``) and operating points, all chosen on its
    validation images, as the SVM's are (Platt scaling of a score on images the classifier did not learn from).

    ``validation_cases`` (the case unit of each validation image; None: no case level) gives it a case-level
    operating point too (:func:`~ultrasound_transfer.evaluation.cases.case_threshold`).
    """
    if validation_probabilities.shape[1] > 2:
        return FittedDense(np.nan, n_train)
    platt = (fit_platt(log_odds(validation_probabilities), validation_labels)
             if evaluation.dense_calibration == "platt" else None)
    malignant = FittedDense(np.nan, n_train, platt).calibrated(validation_probabilities)[:, 1]
    # The paper's reading: softmax 0.5, i.e. log-odds 0.
    argmax_threshold = 0.5 if platt is None else float(platt.probability(np.zeros(1))[0])
    threshold, by_case = operating_points(validation_labels, malignant, argmax_threshold=argmax_threshold,
                                          evaluation=evaluation, cases=validation_cases)
    return FittedDense(threshold, n_train, platt, case_threshold=by_case)


@dataclass(frozen=True)
class FittedSvm:
    """One split's SVM as the study reads it: the fitted model, its Platt scaling and its operating point."""

    model: Pipeline
    n_classes: int
    platt: PlattScaling | None     # None for more than two classes
    threshold: float               # on the Platt probability; NaN for more than two classes
    n_train: int                   # images it learned from
    case_threshold: float = np.nan  # on a case's score, chosen on validation cases (evaluation.cases); NaN: none

    def read(self, features: np.ndarray) -> SplitReading:
        """The SVM on the images of ``features`` (test images, or another dataset's)."""
        decision = per_class_scores(self.model, features, self.n_classes)
        argmax = decision.argmax(axis=1)
        if self.platt is None:
            return SplitReading(decision, np.nan, argmax, self.n_train, C=chosen_C(self.model))
        return SplitReading(two_columns(self.platt.probability(decision[:, 1])), self.threshold, argmax,
                            self.n_train, ranking=decision, C=chosen_C(self.model))


def fit_svm_reading(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, train: np.ndarray,
                    validation: np.ndarray, svm: SvmSettings, evaluation: EvaluationSettings,
                    seed: int, cases: np.ndarray | None = None) -> FittedSvm:
    """Fit the SVM on ``train`` rows, and its Platt scaling and thresholds on rows it did not learn from.

    ``validation`` holds the dense head's validation rows; the SVM calibrates on
    them only when it did not learn from them (``svm.train_on: fit``), else on
    out-of-inner-fold decision values (:func:`calibration_decisions`).
    ``cases`` (the case unit of every row, like ``labels``; None: no case
    level) gives it a case-level operating point too, chosen on the same
    decision values as the image one, so never on images it learned from.
    """
    model = fit_svm(features[train], labels[train], groups[train], svm=svm, seed=seed,
                    validation=(features[validation], labels[validation]) if len(validation) else None)
    n_classes = len(np.unique(labels))
    if n_classes > 2:
        return FittedSvm(model, n_classes, None, np.nan, len(train))
    rows, calibration = calibration_decisions(model, features, labels, groups, validation=validation, train=train,
                                              svm=svm, seed=seed)
    platt = fit_platt(calibration, labels[rows])
    # The SVM's own reading: decision value 0.
    threshold, by_case = operating_points(labels[rows], platt.probability(calibration),
                                          argmax_threshold=float(platt.probability(np.zeros(1))[0]),
                                          evaluation=evaluation, cases=None if cases is None else cases[rows])
    return FittedSvm(model, n_classes, platt, threshold, len(train), case_threshold=by_case)


@dataclass(frozen=True)
class SplitClassifiers:
    """What one split fits beside its fine-tuned network, and what every later reading of it applies."""

    k: int                    # the split, as numbered in the folds file (each fold of each repeat)
    dense: FittedDense
    svm: FittedSvm
    novelty: NoveltyReference  # how unlike its training images an image is to it (evaluation.novelty)


def read_svm(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, train: np.ndarray, test: np.ndarray,
             validation: np.ndarray, svm: SvmSettings, evaluation: EvaluationSettings, seed: int) -> SplitReading:
    """Fit the SVM on ``train`` rows (:func:`fit_svm_reading`) and read it on ``test`` rows."""
    return fit_svm_reading(features, labels, groups, train=train, validation=validation, svm=svm,
                           evaluation=evaluation, seed=seed).read(features[test])


def split_metrics(labels: np.ndarray, reading: SplitReading, class_names: list[str]) -> dict[str, float]:
    """Metrics of one classifier on one test fold: at the operating point, and ``argmax_`` as the paper reads."""
    n_classes = len(class_names)
    argmax = classification_metrics(labels, reading.argmax, reading.probabilities, class_names)
    if n_classes > 2:
        return argmax
    malignant = reading.probabilities[:, 1]
    ranking = reading.probabilities if reading.ranking is None else reading.ranking
    return {"roc_auc": roc_auc(labels, ranking, n_classes), "threshold": reading.threshold,
            **threshold_metrics(labels, malignant, reading.threshold), "brier": brier_score(labels, malignant),
            **{f"argmax_{name}": argmax[name] for name in ARGMAX_METRICS}}
