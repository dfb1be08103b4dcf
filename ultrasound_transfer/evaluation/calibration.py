"""Do the probabilities mean what they say?  Brier score, expected calibration error, reliability diagram.

For two classes, on the probability of malignant.  The Brier score (Brier,
Monthly Weather Review 78, 1950) is the mean squared difference between
probability and outcome (0 is perfect; always saying the prevalence scores
prevalence x (1 - prevalence)).  The expected calibration error (Naeini,
Cooper & Hauskrecht, AAAI 2015; Guo et al., ICML 2017) bins the
probabilities into ``bins`` equal-width bins and averages, weighted by the
bin's share of images, the gap between the bin's mean probability and its
observed fraction of malignant images.  The reliability diagram plots the two.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def brier_score(labels: np.ndarray, probability: np.ndarray) -> float:
    """Mean of (probability of malignant - 1 if malignant else 0) squared."""
    return float(np.mean((np.asarray(probability, dtype=float) - (np.asarray(labels) == 1)) ** 2))


def bin_of(probability: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each probability, 0..bins-1 (1.0 falls in the last bin)."""
    return np.minimum((np.asarray(probability, dtype=float) * bins).astype(int), bins - 1)


def reliability_table(labels: np.ndarray, probability: np.ndarray, bins: int) -> pd.DataFrame:
    """Per non-empty bin: its range, mean predicted probability, observed malignant fraction, image count."""
    probability = np.asarray(probability, dtype=float)
    malignant = (np.asarray(labels) == 1).astype(float)
    index = bin_of(probability, bins)
    rows = []
    for b in np.unique(index):
        inside = index == b
        rows.append({"bin_low": b / bins, "bin_high": (b + 1) / bins,
                     "mean_predicted": float(probability[inside].mean()),
                     "observed_fraction": float(malignant[inside].mean()), "count": int(inside.sum())})
    return pd.DataFrame(rows)


def expected_calibration_error(labels: np.ndarray, probability: np.ndarray, bins: int) -> float:
    """Bin-share-weighted mean |mean predicted - observed fraction| over equal-width bins."""
    probability = np.asarray(probability, dtype=float)
    index = bin_of(probability, bins)
    predicted = np.bincount(index, weights=probability, minlength=bins)
    observed = np.bincount(index, weights=(np.asarray(labels) == 1).astype(float), minlength=bins)
    return float(np.sum(np.abs(predicted - observed)) / len(probability))
