"""The rules that flag a frame the networks never learned to read: the frame's own, and the networks' view."""

import cv2
import numpy as np

from tests.memory import traced_peak
from tests.miniatures import phantom_pixels
from ultrasound_transfer.evaluation.novelty import (
    RULES_SIDE,
    fit_novelty,
    frame_problem,
    neighbour_correlation,
    novelty_threshold,
)


def test_blank_and_noise_frames_are_flagged_and_ultrasound_like_ones_are_not():
    rng = np.random.default_rng(0)
    assert "blank or uniform" in frame_problem(np.zeros((60, 80), np.uint8))
    assert "blank or uniform" in frame_problem(np.full((60, 80), 200, np.uint8))
    noise = rng.integers(0, 256, (60, 80)).astype(np.uint8)
    assert "the frame is noise" in frame_problem(noise) and abs(neighbour_correlation(noise)) < 0.05
    for frame in phantom_pixels(6):
        assert frame_problem(frame) == "", neighbour_correlation(frame)
    speckle = cv2.GaussianBlur(rng.normal(128, 40, (120, 160)), (0, 0), 1.0).clip(0, 255).astype(np.uint8)
    assert frame_problem(speckle) == ""            # correlated noise is what speckle is: not flagged by this rule


def test_a_typical_held_out_image_scores_one_and_a_far_one_far_more():
    rng = np.random.default_rng(1)
    scale = rng.uniform(0.1, 10, 40)
    training, held_out = rng.normal(0, 1, (200, 40)) * scale, rng.normal(0, 1, (50, 40)) * scale
    reference = fit_novelty(training, held_out)
    assert np.median(reference.novelty(held_out)) == 1.0
    threshold = novelty_threshold(reference.novelty(held_out))
    assert 1.0 < threshold < 3.0
    far = rng.normal(0, 1, (5, 40)) * scale + 6 * scale
    assert (reference.novelty(far) > 10 * threshold).all()


def test_a_feature_that_barely_varies_over_the_training_images_does_not_dominate():
    """Without shrinkage a rectified feature that is almost always 0 turns any activation into a huge distance."""
    rng = np.random.default_rng(2)
    training = rng.normal(0, 1, (200, 20))
    training[:, 0] = 0.0
    training[3, 0] = 1e-3                     # one training image barely activates it
    reference = fit_novelty(training, rng.normal(0, 1, (40, 20)))
    typical = rng.normal(0, 1, (1, 20))
    typical[0, 0] = 0.5                       # a held-out image that activates it a little
    assert reference.novelty(typical)[0] < 3
    unshrunk = np.mean(((typical - training.mean(0)) / training.std(0)) ** 2)
    assert unshrunk > 1e3                     # what a plain diagonal Mahalanobis distance would have said


def test_a_large_frame_is_judged_on_its_averaged_reduction_in_little_memory():
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (3000, 4000), dtype=np.uint8)
    enlarged = cv2.resize(phantom_pixels(1)[0], (4000, 3000), interpolation=cv2.INTER_NEAREST)
    verdicts = []
    peak = traced_peak(lambda: verdicts.extend((frame_problem(noise), frame_problem(enlarged))))
    assert "the frame is noise" in verdicts[0] and verdicts[1] == ""
    # Bounded by the reduction (a few float32 copies of RULES_SIDE**2 pixels), not by the frame: float copies of
    # the whole frame would be 4 to 8 times its 12 MB, and of a 400-megapixel frame, gigabytes.
    assert peak < 4 * RULES_SIDE**2 * 4
