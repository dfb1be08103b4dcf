"""How unlike the study's own images a frame is, so that a call on a frame it never learned to read is flagged.

A network calls any frame benign or malignant, an all-black one or a
photograph of text too.  Each split's SVM standardizes the network's
features by their mean and standard deviation over the images it learned
from; the *novelty* of an image under split k is its mean squared
standardized feature,

    s_k(x) = (1/d) sum_j ((f_kj(x) - mu_kj) / sigma_kj) ** 2,

a Mahalanobis distance from the training images with a diagonal covariance
(Lee et al., "A simple unified framework for detecting out-of-distribution
samples and adversarial attacks", NeurIPS 2018, in its simplest form),
divided by its median over the split's test images (images that split never
learned from), so that a typical held-out study image scores 1.  The
ensemble's novelty is the mean over splits.

The rule: a frame is flagged when its novelty exceeds :data:`NOVELTY_QUANTILE`
of the held-out study images' novelty, each read by the split that held it
out (``evaluate`` records that threshold), so that about one in a hundred
frames like the study's is flagged and a frame the networks respond to
unlike the study's images is.  A frame whose gray levels are constant
(standard deviation under :data:`CONSTANT_FRAME_STD`) is flagged whatever
its novelty: it holds no image.  A flag is a warning, not a verdict: the
call is still given, marked as beyond what the networks learned.
"""

from __future__ import annotations

import numpy as np

NOVELTY_QUANTILE = 0.99
CONSTANT_FRAME_STD = 1.0


def novelty_scores(features: np.ndarray, *, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Mean squared standardized feature of each row (before division by the held-out median)."""
    standardized = (np.asarray(features, dtype=np.float64) - mean) / scale
    return np.mean(standardized**2, axis=1)


def held_out_median(scores: np.ndarray) -> float:
    """The median novelty of a split's held-out images: what a typical unseen study image scores (never 0)."""
    return max(float(np.median(scores)), np.finfo(np.float64).tiny)


def novelty_threshold(held_out: np.ndarray) -> float:
    """The novelty above which a frame is flagged: :data:`NOVELTY_QUANTILE` of the held-out images' novelty."""
    return float(np.quantile(np.asarray(held_out, dtype=np.float64), NOVELTY_QUANTILE))


def is_constant(gray: np.ndarray) -> bool:
    """Whether a frame's gray levels are (nearly) all the same: a blank or uniform frame."""
    return float(np.std(gray)) < CONSTANT_FRAME_STD
