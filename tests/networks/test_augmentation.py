import numpy as np
import pytest

from ultrasound_transfer.networks.augmentation import augment_batch
from ultrasound_transfer.settings import AugmentationSettings

pytestmark = pytest.mark.keras_backend

NONE = AugmentationSettings(flip=0, rotate_deg=0, shift=0, scale=0, gain=0, speckle=0)


def images(n: int = 4, size: int = 24) -> np.ndarray:
    return np.random.default_rng(0).integers(20, 200, size=(n, size, size), dtype=np.uint8)


def test_all_strengths_zero_changes_nothing():
    batch = images()
    assert np.array_equal(augment_batch(batch, NONE, np.random.default_rng(1)), batch)


def test_flip_is_horizontal_never_vertical():
    batch = images()
    flipped = augment_batch(batch, AugmentationSettings(1.0, 0, 0, 0, 0, 0), np.random.default_rng(1))
    assert np.array_equal(flipped, batch[:, :, ::-1])


def test_gain_and_speckle_change_brightness_and_texture_not_geometry():
    batch = images(8, 32)
    brighter = augment_batch(batch, AugmentationSettings(0, 0, 0, 0, 0.3, 0), np.random.default_rng(2))
    ratios = brighter.reshape(8, -1).mean(axis=1) / batch.reshape(8, -1).mean(axis=1)
    assert np.all((ratios > 0.69) & (ratios < 1.31)) and np.ptp(ratios) > 0.05
    speckled = augment_batch(batch, AugmentationSettings(0, 0, 0, 0, 0, 0.2), np.random.default_rng(2)).astype(float)
    relative = speckled / batch - 1
    assert 0.1 < relative.std() < 0.3 and abs(relative.mean()) < 0.02


def test_same_generator_same_result():
    batch = images()
    strong = AugmentationSettings(0.5, 10, 0.1, 0.1, 0.2, 0.2)
    a = augment_batch(batch, strong, np.random.default_rng(5))
    assert np.array_equal(a, augment_batch(batch, strong, np.random.default_rng(5)))
    assert a.dtype == np.uint8 and a.shape == batch.shape and not np.array_equal(a, batch)
