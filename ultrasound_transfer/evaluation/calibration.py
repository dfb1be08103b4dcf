"""Do the probabilities mean what they say?  Brier score, expected calibration error, reliability diagram.

For two classes, on the probability of malignant.  The Brier score (Brier,
Monthly Weather Review 78, 1950) is the mean squared difference between
probability and outcome (0 is perfect; always saying the prevalence scores
prevalence x (1 - prevalence)).  The expected calibration error (Naeini,
Cooper & Hauskrecht, AAAI 2015; Guo et al., ICML 2017) bins the
probabilities into ``bins`` equal-width bins and averages, weighted by the
bin's share of images, the gap between the bin's mean probability and its
observed fraction of malignant images.  The reliability diagram plots the two,
each bin's observed fraction with its Wilson interval.

The binned ECE is biased upward on few images (a bin of two images is off by
chance), and at the size of these datasets its bootstrap interval can miss
its own estimate.  So beside it, as TRIPOD+AI asks (Collins et al., BMJ
385, 2024; Van Calster et al., J Clin Epidemiol 74, 2016):

* the **calibration intercept** (calibration-in-the-large: the offset ``a``
  of ``logit P(malignant) = a + logit p``; 0 is calibrated, below 0 the
  probabilities run too high) and the **calibration slope** (``b`` of
  ``logit P = a + b logit p``; 1 is calibrated, below 1 they are too extreme,
  above 1 too timid), both by logistic regression of the outcome on the
  probability's log-odds (Cox, Biometrika 45, 1958);
* the **debiased calibration error** (Kumar, Liang & Ma, NeurIPS 2019): the
  root of the bins' mean squared gap between observed fraction and mean
  probability, each bin's sampling variance ``y(1 - y)/(n - 1)`` taken off,
  over bins of equal counts; 0 where the gaps are no larger than chance
  makes them.  Far less biased than the binned ECE, though not unbiased:
  it is clamped at 0, and a group bootstrap repeats images, which shrinks
  the variance taken off, so its interval need not hold a 0 estimate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def brier_score(labels: np.ndarray, probability: np.ndarray) -> float:
    """Mean of (probability of malignant - 1 if malignant else 0) squared."""
    return float(np.mean((np.asarray(probability, dtype=float) - (np.asarray(labels) == 1)) ** 2))


def bin_of(probability: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each probability, 0..bins-1 (1.0 falls in the last bin)."""
    return np.minimum((np.asarray(probability, dtype=float) * bins).astype(int), bins - 1)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a proportion (Wilson, JASA 22, 1927): sound for small n and 0 or n successes."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def reliability_table(labels: np.ndarray, probability: np.ndarray, bins: int) -> pd.DataFrame:
    """Per non-empty bin: its range, mean predicted probability, observed malignant fraction with its 95 %
    Wilson interval, image count."""
    probability = np.asarray(probability, dtype=float)
    malignant = (np.asarray(labels) == 1).astype(float)
    index = bin_of(probability, bins)
    rows = []
    for b in np.unique(index):
        inside = index == b
        low, high = wilson_interval(int(malignant[inside].sum()), int(inside.sum()))
        rows.append({"bin_low": b / bins, "bin_high": (b + 1) / bins,
                     "mean_predicted": float(probability[inside].mean()),
                     "observed_fraction": float(malignant[inside].mean()), "observed_low": low,
                     "observed_high": high, "count": int(inside.sum())})
    return pd.DataFrame(rows)


def expected_calibration_error(labels: np.ndarray, probability: np.ndarray, bins: int) -> float:
    """Bin-share-weighted mean |mean predicted - observed fraction| over equal-width bins."""
    probability = np.asarray(probability, dtype=float)
    index = bin_of(probability, bins)
    predicted = np.bincount(index, weights=probability, minlength=bins)
    observed = np.bincount(index, weights=(np.asarray(labels) == 1).astype(float), minlength=bins)
    return float(np.sum(np.abs(predicted - observed)) / len(probability))


def logit(probability: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities kept away from 0 and 1 (1e-12), so that a confident 0 or 1 stays finite."""
    p = np.clip(np.asarray(probability, dtype=float), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def logistic_fit(outcome: np.ndarray, covariates: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Coefficients of ``logit P(outcome) = offset + covariates @ beta`` by Newton-Raphson (iteratively
    reweighted least squares), with a small ridge so that a separable sample stays finite."""
    beta = np.zeros(covariates.shape[1])
    for _ in range(100):
        eta = offset + covariates @ beta
        p = np.exp(-np.logaddexp(0.0, -eta))          # 1 / (1 + e^-eta), without overflow
        gradient = covariates.T @ (outcome - p) - 1e-6 * beta
        hessian = (covariates * (p * (1 - p))[:, None]).T @ covariates + 1e-6 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def calibration_intercept_slope(labels: np.ndarray, probability: np.ndarray) -> tuple[float, float]:
    """Calibration-in-the-large (the intercept with the slope fixed at 1) and the calibration slope; NaN without
    both classes."""
    outcome = (np.asarray(labels) == 1).astype(float)
    if outcome.min() == outcome.max():
        return np.nan, np.nan
    lp = logit(probability)
    ones = np.ones((len(lp), 1))
    intercept = float(logistic_fit(outcome, ones, offset=lp)[0])
    slope = float(logistic_fit(outcome, np.column_stack([ones, lp]), offset=np.zeros(len(lp)))[1])
    return intercept, slope


def debiased_calibration_error(labels: np.ndarray, probability: np.ndarray, bins: int) -> float:
    """Kumar et al.'s debiased root mean squared calibration error over ``bins`` bins of equal counts.

    Images are sorted by probability and, among equal probabilities, by
    outcome, so that the bins do not depend on the images' order (a bootstrap
    resample lists them in the order their groups were drawn).
    """
    probability = np.asarray(probability, dtype=float)
    outcome = (np.asarray(labels) == 1).astype(float)
    order = np.lexsort((outcome, probability))
    total = 0.0
    for part in np.array_split(order, min(bins, max(1, len(order) // 2))):
        n = len(part)
        observed, predicted = outcome[part].mean(), probability[part].mean()
        total += n * ((observed - predicted) ** 2 - (observed * (1 - observed) / (n - 1) if n > 1 else 0.0))
    return float(np.sqrt(max(total / len(probability), 0.0)))
