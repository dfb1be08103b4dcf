import keras
import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.networks.backbones import build_classifier
from ultrasound_transfer.networks.runtime import (
    check_data_parallel_supported,
    data_parallel_scope,
    gpu_devices,
    set_precision,
)
from ultrasound_transfer.settings import HeadSettings

pytestmark = pytest.mark.keras_backend


def test_mixed_precision_computes_in_16_bits_and_keeps_the_softmax_in_float32():
    set_precision("mixed_bfloat16")
    try:
        model, _ = build_classifier("VGG16", image_size=32, n_classes=2, weights="none", ft_fraction=0.15,
                                    head=HeadSettings(8, 0.5))
        assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
        assert model.get_layer("predictions").compute_dtype == "float32"   # the softmax stays float32
    finally:
        set_precision("float32")


def test_data_parallel_says_what_it_does_with_the_gpus_this_machine_has(capsys):
    if keras.backend.backend() == "torch":
        pytest.skip("PyTorch has no keras.distribution: see the test below")
    gpus = gpu_devices()
    with data_parallel_scope(True):
        pass
    shown = capsys.readouterr().out
    if len(gpus) < 2:
        assert f"data_parallel: {len(gpus)} GPU(s) found, nothing to split; training on one device" in shown
    else:      # a multi-GPU workstation: the backend's own strategy over all of them
        assert f"over {len(gpus)} GPUs" in shown


def test_data_parallel_is_refused_before_any_work_where_the_backend_has_no_api_for_it():
    check_data_parallel_supported(False)
    if keras.backend.backend() != "torch":
        check_data_parallel_supported(True)
        return
    with pytest.raises(PipelineError, match="not supported on the torch backend.*KERAS_BACKEND=tensorflow or jax"):
        check_data_parallel_supported(True)
    with pytest.raises(PipelineError, match="data_parallel: false"):
        with data_parallel_scope(True):
            pytest.fail("the block must not run")


def test_gpu_devices_answers_on_every_backend():
    assert all(isinstance(device, str) for device in gpu_devices())


def test_an_unknown_precision_is_refused_naming_the_parameter():
    with pytest.raises(PipelineError, match="finetune.precision = 'float8'"):
        set_precision("float8")
