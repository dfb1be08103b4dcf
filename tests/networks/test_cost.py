import keras
import pytest

from ultrasound_transfer.networks.backbones import build_classifier
from ultrasound_transfer.networks.cost import SplitMacs, layer_macs, split_macs, unit_work
from ultrasound_transfer.settings import HeadSettings

pytestmark = pytest.mark.keras_backend


def test_layer_macs_count_convolutions_and_dense_layers():
    inputs = keras.Input((10, 10, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same")
    dense = keras.layers.Dense(5)
    keras.Model(inputs, dense(keras.layers.Flatten()(conv(inputs))))
    assert layer_macs(conv) == 10 * 10 * 4 * 3 * 3 * 3
    assert layer_macs(dense) == 10 * 10 * 4 * 5


def test_vgg16_at_224_px_costs_its_published_15_gmacs_split_by_strategy():
    head_only, _ = build_classifier("VGG16", image_size=224, n_classes=2, weights="none",
                                    ft_fraction=0.0, head=HeadSettings(256, 0.5))
    whole, _ = build_classifier("VGG16", image_size=224, n_classes=2, weights="none",
                                ft_fraction=1.0, head=HeadSettings(256, 0.5))
    assert split_macs(whole).prefix == 0
    assert 15.3e9 < split_macs(whole).tail < 15.5e9
    assert split_macs(head_only).tail == 512 * 256 + 256 * 2
    assert split_macs(head_only).prefix + split_macs(head_only).tail == split_macs(whole).tail


def test_cached_work_saves_exactly_the_prefix_passes():
    macs = SplitMacs(prefix=9.0, tail=1.0)
    assert macs.ideal_epoch_speedup == 4.0
    size = {"images": 100, "folds": 5, "epochs": 10, "validation_fraction": 0.2}
    cached, plain = unit_work(macs, **size), unit_work(macs, **size, cached=False)
    assert cached.training * macs.ideal_epoch_speedup == pytest.approx(plain.training)
    assert cached.prefix_pass == 100 * 9.0 and plain.prefix_pass == 0


def test_repeats_train_every_fold_again_but_run_the_cached_prefix_once():
    macs = SplitMacs(prefix=9.0, tail=1.0)
    size = {"images": 100, "folds": 5, "epochs": 10, "validation_fraction": 0.2}
    once, thrice = unit_work(macs, **size), unit_work(macs, **size, repeats=3)
    assert thrice.training == pytest.approx(3 * once.training) and thrice.inference == pytest.approx(3 * once.inference)
    assert thrice.prefix_pass == once.prefix_pass
