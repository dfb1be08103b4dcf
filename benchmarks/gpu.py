"""Images per second on a GPU: plain and cached training, and feature extraction, beside the card's arithmetic limit.

``python -m benchmarks.gpu`` measures, for each network (default ResNet50
and InceptionV3) and precision (``float32``, ``mixed_float16``,
``mixed_bfloat16``), at 224 px and batch 32, with ``ft_fraction`` 0.15 and
random weights (ImageNet weights cost the same arithmetic):

* **plain training**: Keras ``fit`` steps of the full network, every image
  through every layer (``finetune.frozen_prefix_cache: false``);
* **cached training**: the project's path, steps of the trained tail on the
  cached outputs of the frozen prefix (the prefix pass itself is counted
  under extraction, which it is);
* **extraction**: ``predict`` of the whole network up to the pooled features,
  what the prefix pass and every feature read cost.

Each measurement times ``--steps`` steps after ``--warmup`` untimed ones
(tracing, compilation, cuDNN's autotuning), on the Keras backend of this
process (``KERAS_BACKEND``; on the GPU machines lent to this project,
PyTorch).  Beside each rate is the **arithmetic limit**: the card's peak
multiply-add rate (``--peak-tflops``, or looked up for known cards, for the
precision) over the multiply-adds per image (:mod:`ultrasound_transfer.networks.cost`:
training costs about three forward passes of what trains, plus one of the
frozen part on the plain path).  The share of the limit reached says how
far a path is from the ideal; the rest goes to memory traffic (batch
normalization, activations), kernel launches and the input pipeline.

Prints a table and writes ``benchmarks/results/gpu.json`` and ``.md``
(``--results-dir`` elsewhere).  Without a GPU it runs on the CPU, which the
tests use with tiny sizes (``--image-size 32 --batch-size 4 --steps 2``);
it then says so and gives no limit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.results import RESULTS_DIR, markdown_table, write_results

# Dense (no sparsity) peak tera-FLOP/s by card name fragment: (float32 without TF32, 16-bit tensor cores).
# From the vendors' data sheets; a multiply-add is two FLOPs.
PEAK_TFLOPS = {
    "H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0),
    "L4": (30.3, 121.0), "A10": (31.2, 125.0), "V100": (15.7, 125.0), "T4": (8.1, 65.0),
    "RTX 4090": (82.6, 165.0), "RTX 3090": (35.6, 71.0),
}
PRECISIONS = ["float32", "mixed_float16", "mixed_bfloat16"]


def device_name() -> str:
    """The GPU's name where the backend sees one, else ``CPU``."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return gpus[0].device_kind if gpus else "CPU"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU"


def peak_macs_per_s(device: str, precision: str, peak_tflops: float | None) -> float | None:
    """Multiply-adds per second the card can do at most in ``precision`` (None where unknown)."""
    if peak_tflops is None:
        known = next((peaks for name, peaks in PEAK_TFLOPS.items() if name in device), None)
        if known is None:
            return None
        peak_tflops = known[0] if precision == "float32" else known[1]
    return peak_tflops * 1e12 / 2


def timed_steps(step, steps: int, warmup: int) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones, the device synchronized."""
    for _ in range(warmup):
        step()
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return time.perf_counter() - started


def synchronize() -> None:
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def measure(model_name: str, precision: str, *, image_size: int, batch_size: int, steps: int,
            warmup: int) -> dict:
    """Images/s of plain training, cached training and extraction for one network in one precision."""
    import keras

    from ultrasound_transfer.networks.backbones import POOLED_LAYER, build_classifier, to_network_input
    from ultrasound_transfer.networks.cost import split_macs
    from ultrasound_transfer.networks.fitting import compile_classifier
    from ultrasound_transfer.networks.frozen_prefix import split_at_frozen_prefix
    from ultrasound_transfer.networks.runtime import seed_everything, set_precision
    from ultrasound_transfer.settings import HeadSettings

    set_precision(precision)
    seed_everything(0, deterministic_ops=False)   # the fastest kernels: this measures speed, not repeatability
    if keras.backend.backend() == "torch":
        import torch

        torch.backends.cudnn.benchmark = True       # cuDNN's autotuning, during the warm-up steps
    model, _ = build_classifier(model_name, image_size=image_size, n_classes=2, weights="none",
                                ft_fraction=0.15, head=HeadSettings(256, 0.5))
    macs = split_macs(model)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(batch_size, image_size, image_size), dtype=np.uint8)
    images = np.asarray(to_network_input(gray, model_name), dtype=np.float32)
    labels = rng.integers(0, 2, size=batch_size)

    compile_classifier(model, optimizer="adam", learning_rate=1e-4)
    plain_s = timed_steps(lambda: model.train_on_batch(images, labels), steps, warmup)

    split = split_at_frozen_prefix(model)
    cached = split.prefix.predict(images, batch_size=batch_size, verbose=0)
    cached = [np.asarray(c, dtype=np.float32) for c in (cached if isinstance(cached, (list, tuple)) else [cached])]
    compile_classifier(split.tail, optimizer="adam", learning_rate=1e-4)
    tail_input = cached[0] if len(cached) == 1 else cached
    cached_s = timed_steps(lambda: split.tail.train_on_batch(tail_input, labels), steps, warmup)

    extractor = keras.Model(model.inputs, model.get_layer(POOLED_LAYER).output)
    extract_s = timed_steps(lambda: extractor.predict_on_batch(images), steps, warmup)
    set_precision("float32")
    return {
        "model": model_name, "precision": precision, "image_size": image_size, "batch_size": batch_size,
        "steps": steps, "prefix_macs": macs.prefix, "tail_macs": macs.tail,
        "plain_images_per_s": steps * batch_size / plain_s,
        "cached_images_per_s": steps * batch_size / cached_s,
        "extract_images_per_s": steps * batch_size / extract_s,
    }


def with_limits(row: dict, peak: float | None) -> dict:
    """The row with each path's arithmetic limit (images/s) and the share of it reached."""
    work = {"plain": row["prefix_macs"] + 3 * row["tail_macs"], "cached": 3 * row["tail_macs"],
            "extract": row["prefix_macs"] + row["tail_macs"]}
    for path, macs in work.items():
        limit = peak / macs if peak else None
        row[f"{path}_limit_images_per_s"] = limit
        row[f"{path}_share_of_limit"] = row[f"{path}_images_per_s"] / limit if limit else None
    row["cached_over_plain"] = row["cached_images_per_s"] / row["plain_images_per_s"]
    return row


def rate(row: dict, path: str) -> str:
    share = row[f"{path}_share_of_limit"]
    return f"{row[f'{path}_images_per_s']:,.0f}" + (f" ({share:.0%})" if share is not None else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ResNet50", "InceptionV3"])
    parser.add_argument("--precisions", nargs="+", default=PRECISIONS, choices=PRECISIONS)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, help="the card's peak TFLOP/s for the precisions measured")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    import keras

    device = device_name()
    print(f"device: {device}, Keras backend {keras.backend.backend()}", flush=True)
    rows = []
    for model_name in args.models:
        for precision in args.precisions:
            row = measure(model_name, precision, image_size=args.image_size, batch_size=args.batch_size,
                          steps=args.steps, warmup=args.warmup)
            rows.append(with_limits(row, peak_macs_per_s(device, precision, args.peak_tflops)))
            print(f"{model_name} {precision}: plain {rate(row, 'plain')}, cached {rate(row, 'cached')}, "
                  f"extraction {rate(row, 'extract')} images/s", flush=True)
    table = markdown_table(
        [[r["model"], r["precision"], rate(r, "plain"), rate(r, "cached"), f"{r['cached_over_plain']:.1f}×",
          rate(r, "extract")] for r in rows],
        ["model", "precision", "plain training, images/s (of limit)", "cached training", "cached / plain",
         "extraction"])
    print(table)
    note = (f"Device: {device}, Keras backend {keras.backend.backend()}, {args.image_size} px, batch "
            f"{args.batch_size}, {args.steps} timed steps after {args.warmup}; in brackets the share of the "
            "arithmetic limit (peak multiply-adds per second over multiply-adds per image)"
            + ("." if rows and rows[0]["plain_limit_images_per_s"] else ": no limit, the card's peak is not known."))
    write_results("gpu", {"device": device, "backend": keras.backend.backend(), "rows": rows}, {"table": table},
                  note=note, directory=args.results_dir)


if __name__ == "__main__":
    main()
