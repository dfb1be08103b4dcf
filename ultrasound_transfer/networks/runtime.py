"""Where and how a network computes: seeds, deterministic kernels, precision, GPUs, data parallelism.

Set before a network is built: :func:`seed_everything` makes runs repeat,
:func:`set_precision` picks the dtype policy of every layer built after it,
and :func:`data_parallel_scope` is the block in which to build and train
to split each batch over all GPUs.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import keras

from ultrasound_transfer.choices import PRECISIONS
from ultrasound_transfer.common import PipelineError, check_choice, log

DATA_PARALLEL_BACKENDS = ("tensorflow", "jax")


def seed_everything(seed: int, deterministic_ops: bool = True) -> None:
    """Seed Python, NumPy and the Keras backend; ask for deterministic kernels.

    On the CPU this makes runs with the same params repeat bit for bit, on
    every backend.  ``deterministic_ops`` asks the backend for deterministic
    kernels where it has a switch: TensorFlow's op determinism, PyTorch's
    deterministic algorithms (and cuDNN's deterministic mode), and XLA's
    deterministic GPU ops for JAX (read when JAX first starts, so set it
    before any computation; JAX on the CPU is deterministic anyway).
    """
    keras.utils.set_random_seed(seed)
    if not deterministic_ops:
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        # Some CUDA kernels are deterministic only with this workspace setting.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op without a deterministic kernel (rare, GPU only) warns
        # with its name instead of stopping a long run midway.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif backend == "jax" and "--xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()


def set_precision(policy: str) -> None:
    """Use ``policy`` for every layer built from now on (``mixed_*`` computes in 16 bits).

    Mixed precision pays off on GPUs with tensor cores, and bf16 on CPUs with
    AMX; elsewhere on a CPU it is slower (docs/speed.md, "16-bit arithmetic").
    The softmax output stays float32 (see :func:`ultrasound_transfer.networks.backbones.attach_head`),
    and Keras scales the loss under ``mixed_float16``.
    """
    check_choice("finetune.precision", policy, PRECISIONS)
    keras.config.set_dtype_policy(policy)


def gpu_devices() -> list[str]:
    """The GPUs the Keras backend sees."""
    if keras.backend.backend() == "torch":
        # keras.distribution has no PyTorch implementation; ask PyTorch itself.
        import torch

        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    try:
        return keras.distribution.list_devices("gpu")
    except RuntimeError:      # JAX raises where it has no GPU
        return []


def check_data_parallel_supported(enabled: bool) -> None:
    """Refuse ``finetune.data_parallel = true`` on a backend without a data-parallel API, before any work."""
    backend = keras.backend.backend()
    if enabled and backend not in DATA_PARALLEL_BACKENDS:
        raise PipelineError(
            f"params.yaml: finetune.data_parallel = true is not supported on the {backend} backend of Keras "
            "(keras.distribution has no PyTorch implementation). Use KERAS_BACKEND=tensorflow or jax for "
            "several GPUs, or set finetune.data_parallel: false and run one unit per GPU "
            "(ultrasound-transfer sweep gives each worker its own GPU)."
        )


@contextlib.contextmanager
def data_parallel_scope(enabled: bool, stage: str = "finetune") -> Iterator[None]:
    """Build, compile and train inside this block to split each batch over all GPUs.

    Uses the backend's own distribution API: ``tf.distribute.MirroredStrategy``
    on TensorFlow, ``keras.distribution.DataParallel`` on JAX.  With fewer
    than two GPUs there is nothing to split and training runs on one device.
    The batch size stays the global one, so results do not depend on the GPU
    count beyond float rounding.
    """
    if not enabled:
        yield
        return
    check_data_parallel_supported(enabled)
    backend = keras.backend.backend()
    gpus = gpu_devices()
    if len(gpus) < 2:
        log(stage, f"data_parallel: {len(gpus)} GPU(s) found, nothing to split; training on one device")
        yield
    elif backend == "tensorflow":
        import tensorflow as tf

        log(stage, f"data_parallel: MirroredStrategy over {len(gpus)} GPUs")
        with tf.distribute.MirroredStrategy().scope():
            yield
    else:
        log(stage, f"data_parallel: keras.distribution.DataParallel over {len(gpus)} GPUs")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=gpus))
        try:
            yield
        finally:
            keras.distribution.set_distribution(None)
