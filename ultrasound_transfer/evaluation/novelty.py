"""How unlike the study's own images a frame is, so that a call on a frame it never learned to read is flagged.

A network calls any frame benign or malignant, an all-black one or a
photograph of text too.  Two kinds of rule flag such a frame; a flag is a
warning, not a verdict: the call is still given, marked as beyond what the
networks learned.

**The frame itself** (:func:`frame_problem`), whatever the network: a frame
whose gray levels are constant (standard deviation under
:data:`CONSTANT_FRAME_STD`) holds no image; and one whose neighbouring pixels
are uncorrelated (mean lag-1 autocorrelation, across and down, under
:data:`STRUCTURE_CORRELATION`) holds no structure: speckle and anatomy make
neighbouring pixels of an ultrasound frame alike (0.56-0.68 on the phantom's
frames, whose speckle is finer than a clinical scanner's), while white or
uniform noise gives about 0.  Both read the frame averaged down to at most
:data:`RULES_SIDE` px a side, so a frame of any size costs a few MB.

**The network's view** (:class:`NoveltyReference`): each split's feature
layer (the one its SVM reads) is compared with the images it learned from.
Its novelty is the mean squared standardized distance from their mean,

    s_k(x) = (1/d) sum_j (f_kj(x) - mu_kj) ** 2 / (var_kj + mean_j var_kj),

a Mahalanobis distance with a diagonal covariance (Lee et al., "A simple
unified framework for detecting out-of-distribution samples and adversarial
attacks", NeurIPS 2018, in its simplest form) shrunk halfway towards a
scaled identity (Ledoit & Wolf, J. Multivariate Analysis 88, 2004): features
that barely vary over the training images, as many rectified ones do, would
otherwise dominate it with the noise of their tiny variances.  It is divided
by its median over the split's test images (images that split never learned
from), so that a typical held-out study image scores 1; the ensemble's
novelty is the mean over splits.  A frame is flagged when its novelty exceeds
:data:`NOVELTY_QUANTILE` of the held-out study images' novelty, each read by
the split that held it out (``evaluate`` records that threshold).  That is a
description of the study's images, not a test with a known false-alarm
rate: the mean over k splits exceeds it only where some split's novelty
does, so at most k in a hundred frames like the study's are flagged, fewer
where the splits agree (averaging thins the tail); no study image is new to
every split, so the ensemble's own rate cannot be measured on the study's
data.  How well this
separates depends on the networks: with ImageNet weights their features
describe images; the offline demo's random-weight networks flag photographs
and blank frames but not every kind of noise, which the frame rules catch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NOVELTY_QUANTILE = 0.99
CONSTANT_FRAME_STD = 1.0
STRUCTURE_CORRELATION = 0.2
# The frame rules read the frame reduced by pixel averaging to at most this many pixels on its longer side: a
# 400-megapixel frame would otherwise need gigabytes of float copies. Averaging non-overlapping blocks keeps
# independent noise independent, and a constant frame constant.
RULES_SIDE = 512


@dataclass(frozen=True)
class NoveltyReference:
    """One split's reference: the training images' feature mean, the shrunk scale, the held-out median."""

    mean: np.ndarray        # (d,) over the images the split's SVM learned from
    scale: np.ndarray       # (d,) sqrt(var_j + mean_j var_j)
    median: float           # median raw novelty of the split's held-out (test) images

    def raw(self, features: np.ndarray) -> np.ndarray:
        """Mean squared shrunk-standardized distance of each row from the training images' mean."""
        standardized = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.mean(standardized**2, axis=1)

    def novelty(self, features: np.ndarray) -> np.ndarray:
        """Each row's novelty: 1 for a typical held-out study image."""
        return self.raw(features) / self.median


def fit_novelty(training: np.ndarray, held_out: np.ndarray) -> NoveltyReference:
    """The reference of one split: its training images' features, and its held-out images' to scale by."""
    training = np.asarray(training, dtype=np.float64)
    variance = training.var(axis=0)
    scale = np.sqrt(variance + max(float(variance.mean()), np.finfo(np.float64).tiny))
    reference = NoveltyReference(training.mean(axis=0), scale, 1.0)
    median = max(float(np.median(reference.raw(held_out))), np.finfo(np.float64).tiny)
    return NoveltyReference(reference.mean, scale, median)


def novelty_threshold(held_out: np.ndarray) -> float:
    """The novelty above which a frame is flagged: :data:`NOVELTY_QUANTILE` of the held-out images' novelty."""
    return float(np.quantile(np.asarray(held_out, dtype=np.float64), NOVELTY_QUANTILE))


def neighbour_correlation(gray: np.ndarray) -> float:
    """Mean lag-1 autocorrelation of the gray levels, across and down (1 for a constant frame)."""
    values = np.asarray(gray, dtype=np.float32)
    values -= values.mean(dtype=np.float64)
    variance = float(np.mean(np.square(values), dtype=np.float64))
    if variance == 0:
        return 1.0
    across = float(np.mean(values[:, 1:] * values[:, :-1], dtype=np.float64))
    down = float(np.mean(values[1:] * values[:-1], dtype=np.float64))
    return (across + down) / (2 * variance)


def reduced(gray: np.ndarray) -> np.ndarray:
    """The frame with at most :data:`RULES_SIDE` pixels on its longer side, each the average of the pixels it
    covers (OpenCV's area interpolation, which works a row at a time)."""
    scale = RULES_SIDE / max(gray.shape)
    if scale >= 1:
        return gray
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def frame_problem(gray: np.ndarray) -> str:
    """Why a frame holds no ultrasound image at all (empty when it may hold one), read on the frame reduced to
    :data:`RULES_SIDE` px."""
    gray = reduced(gray)
    if float(np.std(gray, dtype=np.float32)) < CONSTANT_FRAME_STD:
        return (f"the frame is blank or uniform (its gray levels vary by less than {CONSTANT_FRAME_STD:g}): not an "
                "ultrasound image; the call means nothing")
    correlation = neighbour_correlation(gray)
    if correlation < STRUCTURE_CORRELATION:
        return (f"the frame is noise (neighbouring pixels correlate {correlation:.2f}, under "
                f"{STRUCTURE_CORRELATION:g}; speckle and anatomy make them alike): the call means nothing")
    return ""
