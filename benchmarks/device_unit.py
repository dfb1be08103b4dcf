"""One fold of a ``finetune`` unit as the stage runs it, per network, strategy and precision: time, images per
second beside the arithmetic limit, and peak memory.

``python -m benchmarks.device_unit`` is what ``benchmarks/device_run.sh``
runs on a lent GPU machine, once per Keras backend (``KERAS_BACKEND``).  It
generates a phantom dataset of BUSI's size (``--images`` 780, at
``--image-size`` 224 px), and for each network x ``ft_fraction`` x
precision, in a fresh process (so that each row's peak memory is its own),
trains one fold of five the way ``finetune`` does, with the stage's own
functions: :func:`~ultrasound_transfer.networks.training_paths.choose_training_path`
(the frozen prefix once over every image, or the full network at
``ft_fraction`` 1), :func:`~ultrasound_transfer.networks.fitting.compile_classifier`,
the head's standardization and :func:`~ultrasound_transfer.networks.fitting.fit_fold`
on the fold's fit part (64 % of the images) with its validation part (16 %)
every epoch, then the test fold's predictions and every image's features.

Per row: the seconds before the first epoch (build, prefix pass, compile),
the first epoch (tracing or XLA compilation) and the steady epoch (the
median of the others); training images per second of a steady epoch beside
the limit the card's peak multiply-add rate allows for that path
(:mod:`ultrasound_transfer.networks.cost`; ``--peak-tflops``, or looked up by
card name as :mod:`benchmarks.gpu` does); the whole unit's estimate (fixed
cost once, five folds of ``--unit-epochs`` epochs at the steady rate, the
features); peak host memory (``ru_maxrss``) and peak accelerator memory
(PyTorch's or JAX's allocator).  Writes ``device_unit_<backend>.json`` and
``.md`` into ``--results-dir`` (``$OUT`` on the device machine), row by row,
so a run stopped by its time limit keeps what it measured.

Deterministic kernels as ``params.yaml`` sets them (``finetune.deterministic_ops``):
the figures are for the study as it runs, not for its fastest unrepeatable
setting.  Without a GPU it runs on the CPU, which a test does with tiny sizes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.gpu import PRECISIONS, device_name, peak_macs_per_s, synchronize
from benchmarks.results import RESULTS_DIR, markdown_table, write_results
from ultrasound_transfer.settings import HeadSettings, PhantomSettings

FOLDS = 5
FIT_SHARE, VALIDATION_SHARE = 0.64, 0.16     # of all images: one fold of five, a fifth of its training part


def phantom_images(image_size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` phantom frames squared to ``image_size`` px, and their labels."""
    from ultrasound_transfer.data.imaging import letterbox
    from ultrasound_transfer.data.phantom import CLASS_NAMES, generate

    images = generate(PhantomSettings(count=count, seed=7, native_size=256))
    return (np.stack([letterbox(image.pixels, image_size) for image in images]),
            np.array([CLASS_NAMES.index(image.label) for image in images]))


def accelerator_peak_mb() -> float | None:
    """The most memory the backend's allocator held on the GPU in this process (None without a GPU)."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        stats = gpus[0].memory_stats() if gpus else None
        return stats["peak_bytes_in_use"] / 2**20 if stats else None
    return None


def one_fold(model_name: str, ft_fraction: float, precision: str, *, image_size: int, images: int, epochs: int,
             batch_size: int) -> dict:
    """Train one fold of a unit in this process, as ``finetune`` does; its times, rates and memory."""
    import keras

    from ultrasound_transfer.networks.backbones import FEATURE_LAYERS, build_classifier
    from ultrasound_transfer.networks.cost import split_macs
    from ultrasound_transfer.networks.fitting import compile_classifier, fit_fold
    from ultrasound_transfer.networks.runtime import seed_everything, set_precision
    from ultrasound_transfer.networks.training_paths import (
        choose_training_path,
        layer_outputs,
        standardize_head_input,
    )
    from ultrasound_transfer.parameters import load_settings

    cfg = load_settings(Path(__file__).resolve().parents[1] / "params.yaml").finetune
    pixels, labels = phantom_images(image_size, images)
    n_fit, n_validation = int(FIT_SHARE * images), int(VALIDATION_SHARE * images)
    fit, validation = np.arange(n_fit), np.arange(n_fit, n_fit + n_validation)
    test = np.arange(n_fit + n_validation, images)
    set_precision(precision)
    seed_everything(1, cfg.deterministic_ops)
    started = time.perf_counter()
    model, _ = build_classifier(model_name, image_size=image_size, n_classes=2, weights="none",
                                ft_fraction=ft_fraction, head=HeadSettings(256, 0.5))
    macs = split_macs(model)
    ticks: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: (synchronize(),
                                                                              ticks.append(time.perf_counter())))
    with choose_training_path(model, pixels, model_name=model_name, batch_size=batch_size) as path:
        compile_classifier(path.model, optimizer="adam", learning_rate=1e-4, jit_compile=cfg.jit_compile)
        standardize_head_input(path, model, fit)
        synchronize()
        before_training = time.perf_counter()
        fit_fold(path.model, path.batches(fit, labels, seed=1), path.batches(validation, labels), epochs=epochs,
                 patience=epochs, class_weight=None, progress=timer)
        after_training = time.perf_counter()
        path.model.predict(path.batches(test), verbose=0)
        layer_outputs(path, model, list(FEATURE_LAYERS.values()), np.arange(images))
        synchronize()
        after_features = time.perf_counter()
        cached = path.description["path"] == "frozen-prefix cache"
    set_precision("float32")
    epoch_s = np.diff([before_training, *ticks])
    steady = float(np.median(epoch_s[1:])) if len(epoch_s) > 1 else float(epoch_s[0])
    return {"model": model_name, "ft_fraction": ft_fraction, "precision": precision, "image_size": image_size,
            "images": images, "fit_images": n_fit, "validation_images": n_validation, "epochs": epochs,
            "batch_size": batch_size, "path": path.description["path"], "prefix_macs": macs.prefix,
            "tail_macs": macs.tail, "cached": cached, "before_training_s": before_training - started,
            "first_epoch_s": float(epoch_s[0]), "steady_epoch_s": steady,
            "test_and_features_s": after_features - after_training,
            "host_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "accelerator_peak_mb": accelerator_peak_mb()}


def in_fresh_process(*args, **kwargs) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(one_fold, *args, **kwargs).result()


def with_rates(row: dict, peak: float | None, *, unit_epochs: int) -> dict:
    """The row with its training rate, that rate's arithmetic limit, and the estimate of a whole unit."""
    per_training_image = 3 * row["tail_macs"] + (0 if row["cached"] else row["prefix_macs"])
    row["training_images_per_s"] = row["fit_images"] / row["steady_epoch_s"]
    row["limit_images_per_s"] = peak / per_training_image if peak else None
    row["share_of_limit"] = row["training_images_per_s"] / row["limit_images_per_s"] if peak else None
    fixed = row["before_training_s"] + row["first_epoch_s"] - row["steady_epoch_s"]
    row["unit_estimate_s"] = fixed + FOLDS * (unit_epochs * row["steady_epoch_s"] + row["test_and_features_s"])
    return row


def rows_table(rows: list[dict]) -> str:
    def limit(row: dict) -> str:
        return f"{row['limit_images_per_s']:,.0f} ({row['share_of_limit']:.0%})" if row["limit_images_per_s"] else "—"

    def memory(row: dict) -> str:
        device = row["accelerator_peak_mb"]
        return f"{row['host_peak_mb']:,.0f}" + (f" / {device:,.0f}" if device is not None else "")

    return markdown_table(
        [[r["model"], f"{r['ft_fraction']:g}", r["precision"], r["path"], f"{r['before_training_s']:.1f}",
          f"{r['first_epoch_s']:.1f}", f"{r['steady_epoch_s']:.2f}", f"{r['training_images_per_s']:,.0f}", limit(r),
          f"{r['unit_estimate_s'] / 60:.1f}", memory(r)] for r in rows],
        ["network", "ft_fraction", "precision", "path", "before training, s", "first epoch, s", "steady epoch, s",
         "training images/s", "limit images/s (reached)", "unit estimate, min", "peak MB: host / GPU"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ResNet50", "VGG16"])
    parser.add_argument("--ft-fractions", nargs="+", type=float, default=[0.15, 1.0])
    parser.add_argument("--precisions", nargs="+", default=["mixed_bfloat16", "float32"], choices=PRECISIONS)
    parser.add_argument("--images", type=int, default=780, help="BUSI's 780 images")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per row (the first compiles)")
    parser.add_argument("--unit-epochs", type=int, default=15, help="epochs per fold in the unit estimate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--peak-tflops", type=float, help="the card's peak TFLOP/s for the precisions measured")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    import keras

    backend, device = keras.backend.backend(), device_name()
    print(f"device: {device}, Keras backend {backend}", flush=True)
    rows: list[dict] = []
    for model_name in args.models:
        for ft_fraction in args.ft_fractions:
            for precision in args.precisions:
                row = in_fresh_process(model_name, ft_fraction, precision, image_size=args.image_size,
                                       images=args.images, epochs=args.epochs, batch_size=args.batch_size)
                rows.append(with_rates(row, peak_macs_per_s(device, precision, args.peak_tflops),
                                       unit_epochs=args.unit_epochs))
                print(f"{model_name} {ft_fraction:g} {precision}: {row['training_images_per_s']:,.0f} training "
                      f"images/s, steady epoch {row['steady_epoch_s']:.2f} s, unit about "
                      f"{row['unit_estimate_s'] / 60:.1f} min", flush=True)
                note = (f"Device: {device}, Keras backend {backend}; one fold of five of a unit of {args.images} "
                        f"phantom images at {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs "
                        f"timed; the unit estimate counts {args.unit_epochs} epochs per fold. Limit: the card's "
                        "peak multiply-adds per second over those of one training image on the path taken"
                        + ("." if rows[0]["limit_images_per_s"] else " (unknown for this device)."))
                write_results(f"device_unit_{backend}", {"device": device, "backend": backend, "rows": rows},
                              {"table": rows_table(rows)}, note=note, directory=args.results_dir,
                              benchmark="device_unit")
    print(rows_table(rows))


if __name__ == "__main__":
    main()
