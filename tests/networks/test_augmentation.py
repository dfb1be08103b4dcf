import numpy as np
import pytest

from ultrasound_transfer.networks.augmentation import Augmentation, augment_batch, augmentation_from_params
from ultrasound_transfer.common import PipelineError
from tests.conftest import default_params

pytestmark = pytest.mark.keras_backend

NONE = Augmentation(flip=0, rotate_deg=0, shift=0, scale=0, gain=0, speckle=0)


def images(n: int = 4, size: int = 24) -> np.ndarray:
    return np.random.default_rng(0).integers(20, 200, size=(n, size, size), dtype=np.uint8)


def test_all_strengths_zero_changes_nothing():
    batch = images()
    assert np.array_equal(augment_batch(batch, NONE, np.random.default_rng(1)), batch)


def test_flip_is_horizontal_never_vertical():
    batch = images()
    flipped = augment_batch(batch, Augmentation(1.0, 0, 0, 0, 0, 0), np.random.default_rng(1))
    assert np.array_equal(flipped, batch[:, :, ::-1])


def test_gain_and_speckle_change_brightness_and_texture_not_geometry():
    batch = images(8, 32)
    brighter = augment_batch(batch, Augmentation(0, 0, 0, 0, 0.3, 0), np.random.default_rng(2))
    ratios = brighter.reshape(8, -1).mean(axis=1) / batch.reshape(8, -1).mean(axis=1)
    assert np.all((ratios > 0.69) & (ratios < 1.31)) and np.ptp(ratios) > 0.05
    speckled = augment_batch(batch, Augmentation(0, 0, 0, 0, 0, 0.2), np.random.default_rng(2)).astype(float)
    relative = speckled / batch - 1
    assert 0.1 < relative.std() < 0.3 and abs(relative.mean()) < 0.02


def test_same_generator_same_result():
    batch = images()
    strong = Augmentation(0.5, 10, 0.1, 0.1, 0.2, 0.2)
    a = augment_batch(batch, strong, np.random.default_rng(5))
    assert np.array_equal(a, augment_batch(batch, strong, np.random.default_rng(5)))
    assert a.dtype == np.uint8 and a.shape == batch.shape and not np.array_equal(a, batch)


def test_params_off_by_default_and_out_of_range_is_an_error():
    params = default_params()
    assert augmentation_from_params(params) is None
    params["finetune"]["augmentation"].update(enabled=True, rotate_deg=90)
    with pytest.raises(PipelineError, match=r"finetune.augmentation.rotate_deg = 90 is out of range"):
        augmentation_from_params(params)
    params["finetune"]["augmentation"]["rotate_deg"] = 5
    assert augmentation_from_params(params).rotate_deg == 5.0
