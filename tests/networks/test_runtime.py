import contextlib
import hashlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.networks.backbones import build_classifier
from ultrasound_transfer.networks.fitting import compile_classifier, fit_fold
from ultrasound_transfer.networks.runtime import (
    check_data_parallel_supported,
    data_parallel_scope,
    gpu_devices,
    seed_everything,
    set_precision,
)
from ultrasound_transfer.networks.training_paths import choose_training_path
from ultrasound_transfer.settings import HeadSettings, PrefixCacheSettings

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


def backend_gpu_count() -> int:
    """The GPUs the backend itself reports, asked without gpu_devices."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    import jax

    return sum(device.platform == "gpu" for device in jax.devices())


def test_gpu_devices_answers_on_every_backend_as_the_backend_counts(monkeypatch):
    found = gpu_devices()
    assert all(isinstance(device, str) for device in found) and len(found) == backend_gpu_count()
    if keras.backend.backend() != "torch":
        monkeypatch.setattr(keras.distribution, "list_devices", lambda kind: ["gpu:0", "gpu:1"])
        assert gpu_devices() == ["gpu:0", "gpu:1"]

        def no_gpu(kind):
            raise RuntimeError("no GPU")          # as JAX answers where it has none

        monkeypatch.setattr(keras.distribution, "list_devices", no_gpu)
        assert gpu_devices() == []


def test_an_unknown_precision_is_refused_naming_the_parameter():
    with pytest.raises(PipelineError, match="finetune.precision = 'float8'"):
        set_precision("float8")


@contextlib.contextmanager
def cpu_load(processes: int):
    """Keep ``processes`` other processes spinning on the CPU while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def training_digest() -> str:
    """SHA-256 of the weights and predictions of a short training of ResNet50 (frozen prefix, tail with batch norm)."""
    rng = np.random.default_rng(0)
    images = np.kron(rng.normal(size=(24, 5, 5)), np.ones((8, 8)))[:, :32, :32]
    images, labels = np.clip(128 + 60 * images, 0, 255).astype(np.uint8), np.array([0, 1] * 12)
    seed_everything(0)
    model, _ = build_classifier("ResNet50", image_size=32, n_classes=2, weights="none", ft_fraction=0.15,
                                head=HeadSettings(16, 0.5))
    with choose_training_path(model, images, model_name="ResNet50", batch_size=8,
                              cache=PrefixCacheSettings(enabled=True)) as path:
        compile_classifier(path.model, optimizer="adam", learning_rate=1e-3)
        seed_everything(1)
        fit_fold(path.model, path.batches(np.arange(16), labels, seed=2), path.batches(np.arange(16, 20), labels),
                 epochs=2, patience=5, class_weight=None, progress=keras.callbacks.Callback())
        probs = path.model.predict(path.batches(np.arange(20, 24)), verbose=0)
    digest = hashlib.sha256(np.asarray(probs, dtype=np.float32).tobytes())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="run on the default backend only, for CI's time")
def test_training_repeats_bit_for_bit_while_other_processes_load_every_core():
    """The claim of docs/reproducibility.md: on one machine the results do not depend on how busy it is."""
    idle = training_digest()
    with cpu_load(os.cpu_count() or 2):
        busy = training_digest()
    assert busy == idle
