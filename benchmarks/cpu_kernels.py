"""Where TensorFlow's CPU time goes: one epoch of the demo's training under each backend and kernel choice.

``python -m benchmarks.cpu_kernels`` trains, in a fresh process per
configuration and side by side in one run, the same fold the demo trains
(phantom images at 80 px, 80 training and 20 validation images, the demo's
``finetune`` settings from ``params.yaml``: batch 16, the head's
standardization, the backbone's learning-rate factor; ``ft_fraction`` 0.15,
the frozen-prefix cache, random weights) for a few
epochs, and reports the median epoch after the first (which traces or
compiles) and the first epoch itself, each the least over ``--repeat``
rounds (3), every configuration once per round in turn:

* TensorFlow with op determinism (``finetune.deterministic_ops: true``, the
  default) and without it;
* TensorFlow with XLA (``finetune.jit_compile: true``), which Keras allows
  only with op determinism off;
* TensorFlow without oneDNN (``TF_ENABLE_ONEDNN_OPTS=0``);
* TensorFlow with glibc's default heap (``MALLOC_TOP_PAD_=131072``), where
  every other configuration keeps freed memory between steps, as the stage
  does (:mod:`ultrasound_transfer.networks.heap`);
* JAX and PyTorch where installed, with their deterministic settings.

Each row also says whether two runs of it gave bit-identical weights and
predictions (``--repeat``), and the process's peak resident memory (the
largest over the rounds).  Writes ``benchmarks/results/cpu_kernels.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys

from benchmarks.processes import GLIBC_DEFAULT_HEAP, child_environment
from benchmarks.results import REPO, markdown_table, write_results
from ultrasound_transfer.networks.heap import keep_freed_memory

# (label, KERAS_BACKEND, finetune.deterministic_ops, jit_compile, extra environment)
CONFIGURATIONS = [
    ("TensorFlow, op determinism (the default)", "tensorflow", True, False, {}),
    ("TensorFlow, op determinism, glibc's default heap", "tensorflow", True, False, GLIBC_DEFAULT_HEAP),
    ("TensorFlow, no op determinism", "tensorflow", False, False, {}),
    ("TensorFlow, XLA (needs op determinism off)", "tensorflow", False, True, {}),
    ("TensorFlow, op determinism, no oneDNN", "tensorflow", True, False, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    ("JAX", "jax", True, "auto", {}),
    ("PyTorch, deterministic algorithms", "torch", True, "auto", {}),
]


def one_fold(model_name: str, deterministic_ops: bool, jit_compile, epochs: int) -> dict:
    """Train one demo fold in this process (freed memory kept, as the stage's process does); epoch seconds and a
    digest of what it gave."""
    keep_freed_memory()
    import resource
    import time

    import keras
    import numpy as np

    from benchmarks.finetune_speed import phantom_images
    from ultrasound_transfer.networks.backbones import POOLED_LAYER, build_classifier
    from ultrasound_transfer.networks.feature_extraction import LayerReader, standardize_head_input
    from ultrasound_transfer.networks.fitting import compile_classifier, fit_fold
    from ultrasound_transfer.networks.runtime import seed_everything
    from ultrasound_transfer.networks.training_paths import choose_training_path
    from ultrasound_transfer.parameters import load_settings

    cfg = load_settings(REPO / "params.yaml").finetune

    images, labels = phantom_images(80)
    seed_everything(42, deterministic_ops=deterministic_ops)
    model, _ = build_classifier(model_name, image_size=80, n_classes=2, weights="none", ft_fraction=0.15,
                                head=cfg.head)
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    with choose_training_path(model, images, model_name=model_name, batch_size=cfg.batch_size) as path:
        compile_classifier(path.model, optimizer=cfg.optimizer, learning_rate=cfg.learning_rate,
                           jit_compile=jit_compile, backbone_lr_factor=cfg.backbone_lr_factor)
        standardize_head_input(model, LayerReader.through(path, model, [POOLED_LAYER]), np.arange(80))
        fit_fold(path.model, path.batches(np.arange(80), labels, seed=1), path.batches(np.arange(80, 100), labels),
                 epochs=epochs, patience=epochs, class_weight=None, progress=Timer())
        [probs] = path.predict(np.arange(100, 128))
    digest = hashlib.sha256(probs.tobytes())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return {"first_epoch_s": seconds[0], "epoch_s": float(np.median(seconds[1:])), "digest": digest.hexdigest(),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def configuration_environment(backend: str, env: dict[str, str]) -> dict[str, str]:
    """The environment of one configuration's process: this one's, its backend and its extra variables.  The heap
    setting is the configuration's alone: a ``MALLOC_TOP_PAD_`` of the caller's would reach every row."""
    return child_environment({"KERAS_BACKEND": backend, **env, "TF_CPP_MIN_LOG_LEVEL": "2"})


def in_fresh_process(backend: str, env: dict, *args) -> dict:
    script = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.cpu_kernels import one_fold; "
              f"print('RESULT', json.dumps(one_fold(*{args!r})))")
    done = subprocess.run([sys.executable, "-c", script], env=configuration_environment(backend, env),
                          capture_output=True, text=True, check=True)
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))[7:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ResNet50", "VGG16"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds over every configuration, in turn; their runs are compared bit for bit")
    args = parser.parse_args(argv)
    installed = [c for c in CONFIGURATIONS
                 if importlib.util.find_spec({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[c[1]])]
    # Rounds outermost: every configuration once per round, in turn, so that a slow spell of the machine
    # touches all of them alike; each row keeps its fastest round.
    runs: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(args.repeat):
        for model_name in args.models:
            for label, backend, determinism, jit, env in installed:
                run = in_fresh_process(backend, env, model_name, determinism, jit, args.epochs)
                runs.setdefault((model_name, label), []).append(run)
                print(json.dumps({"round": round_ + 1, "model": model_name, "configuration": label, **run}),
                      flush=True)
    rows = [{"model": model_name, "configuration": label, "epoch_s": min(r["epoch_s"] for r in done),
             "first_epoch_s": min(r["first_epoch_s"] for r in done), "peak_mb": max(r["peak_mb"] for r in done),
             "repeats_bit_for_bit": len({r["digest"] for r in done}) == 1}
            for (model_name, label), done in runs.items()]
    for model_name in args.models:
        fastest = min(r["epoch_s"] for r in rows if r["model"] == model_name)
        for row in rows:
            if row["model"] == model_name:
                row["over_fastest"] = row["epoch_s"] / fastest
    table = markdown_table(
        [[r["model"], r["configuration"], f"{r['epoch_s']:.2f}", f"{r['over_fastest']:.2f}×",
          f"{r['first_epoch_s']:.1f}", "yes" if r["repeats_bit_for_bit"] else "**no**", f"{r['peak_mb']:,.0f}"]
         for r in rows],
        ["model", "configuration", "epoch, s", "over the fastest", "first epoch, s",
         f"{args.repeat} runs bit for bit", "peak MB"])
    print(table)
    write_results("cpu_kernels", rows, {"table": table})


if __name__ == "__main__":
    main()
