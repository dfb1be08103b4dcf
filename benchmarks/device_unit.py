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
the limit the device's **measured matrix rate** allows for that path: the
multiply-adds per second of a large matrix product in the row's precision
on the same backend and device (:func:`matrix_macs_per_s`; ``--peak-tflops``
replaces it by a stated rate), over the multiply-adds of one training image
(:mod:`ultrasound_transfer.networks.cost`); peak host memory (``ru_maxrss``)
and peak accelerator memory (PyTorch's or JAX's allocator).

The **unit breakdown** extends the fold to the whole unit (five folds of
``--unit-epochs`` epochs; the stage builds, passes the prefix and traces
once, and restores the initial weights per fold) and splits its time in
three: the *arithmetic floor*, the unit's multiply-adds
(:func:`~ultrasound_transfer.networks.cost.unit_work`) at the measured matrix
rate; the *per-step overhead*, what the steady epochs take beyond their own
arithmetic (framework dispatch per step, memory traffic of normalization and
activations, the input feed); and the *fixed cost*, the time outside the
steady epochs beyond its own arithmetic (building, tracing, prediction
calls; imports are not counted: the row starts in a running process).
Run it on a CPU with ``--image-sizes 80 224`` for the demo's unit at both
sizes, and ``--rounds 3`` to run every configuration in turn three times and
keep each one's fastest round (a shared machine's noise only slows a run).

Writes ``device_unit_<backend>.json`` and ``.md`` into ``--results-dir``
(``$OUT`` on the device machine), row by row, so a run stopped by its time
limit keeps what it measured.

Deterministic kernels as ``params.yaml`` sets them (``finetune.deterministic_ops``):
the figures are for the study as it runs, not for its fastest unrepeatable
setting.  Without a GPU it runs on the CPU, which a test does with tiny sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from benchmarks.gpu import PRECISIONS, device_name, peak_macs_per_s, synchronize, timed_steps
from benchmarks.results import RESULTS_DIR, markdown_table, write_results
from ultrasound_transfer.networks.heap import keep_freed_memory
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


def matrix_macs_per_s(precision: str, *, side: int | None = None, rounds: int = 5) -> float:
    """Multiply-adds per second of a ``side`` x ``side`` matrix product in ``precision``'s compute dtype.

    On the active Keras backend and device, the fastest of ``rounds``: the
    rate the device reaches on the operation these networks' arithmetic is
    made of, which bounds from above what any of their steps can reach.
    Measured after the fold (the backend's deterministic settings are made
    before it starts) and after its memory is read, with the matrices made
    on the device.  On PyTorch, float32 matrix products use TF32 exactly when
    cuDNN's convolutions do (``torch.backends.cudnn.allow_tf32``), so the
    limit is the one the network's convolutions run under.
    """
    import keras

    on_gpu = device_name() != "CPU"
    side = side or (8192 if on_gpu else 2048)
    dtype = keras.DTypePolicy(precision).compute_dtype
    a, b = (keras.random.normal((side, side), dtype=dtype, seed=seed) for seed in (1, 2))
    products = max(1, int(2e12 // side**3)) if on_gpu else 4

    def step() -> None:
        # Reading one value back waits for the device (JAX and PyTorch run asynchronously).
        keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.matmul(a, b)[0, 0], "float32"))

    with torch_matmul_tf32_as_convolutions():
        fastest = min(timed_steps(step, products, warmup=1) for _ in range(rounds))
    return products * side**3 / fastest


@contextlib.contextmanager
def torch_matmul_tf32_as_convolutions() -> Iterator[None]:
    """On PyTorch, matrix products allow TF32 as cuDNN's convolutions do, for the block; elsewhere nothing."""
    import keras

    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def one_fold(model_name: str, ft_fraction: float, precision: str, *, image_size: int, images: int, epochs: int,
             batch_size: int) -> dict:
    """Train one fold of a unit in this process, as ``finetune`` does; its times, rates and memory."""
    keep_freed_memory()                                 # as the stage's process does
    import keras

    from ultrasound_transfer.networks.backbones import FEATURE_LAYERS, build_classifier
    from ultrasound_transfer.networks.cost import split_macs
    from ultrasound_transfer.networks.feature_extraction import LayerReader, standardize_head_input
    from ultrasound_transfer.networks.fitting import compile_classifier, fit_fold
    from ultrasound_transfer.networks.runtime import seed_everything, set_precision
    from ultrasound_transfer.networks.training_paths import choose_training_path
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
        reader = LayerReader.through(path, model, list(FEATURE_LAYERS.values()))    # one per unit, as the stage's
        standardize_head_input(model, reader, fit)
        synchronize()
        before_training = time.perf_counter()
        fit_fold(path.model, path.batches(fit, labels, seed=1), path.batches(validation, labels), epochs=epochs,
                 patience=epochs, class_weight=None, progress=timer)
        after_training = time.perf_counter()
        reads_s, reads_started = [], after_training
        for _fold in range(2):      # the first fold's reads trace what they run; a later fold's reuse that
            path.predict(test)
            reader()
            synchronize()
            reads_s.append(time.perf_counter() - reads_started)
            reads_started = time.perf_counter()
        cached = path.description["path"] == "frozen-prefix cache"
    set_precision("float32")
    epoch_s = np.diff([before_training, *ticks])
    steady = float(np.median(epoch_s[1:])) if len(epoch_s) > 1 else float(epoch_s[0])
    return {"model": model_name, "ft_fraction": ft_fraction, "precision": precision, "image_size": image_size,
            "images": images, "fit_images": n_fit, "validation_images": n_validation, "epochs": epochs,
            "batch_size": batch_size, "path": path.description["path"], "prefix_macs": macs.prefix,
            "tail_macs": macs.tail, "cached": cached,
            "before_training_s": before_training - started,
            "first_epoch_s": float(epoch_s[0]), "steady_epoch_s": steady,
            "test_and_features_s": reads_s[0], "later_test_and_features_s": reads_s[1],
            "host_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "accelerator_peak_mb": accelerator_peak_mb()} | {"matrix_macs_per_s": matrix_macs_per_s(precision)}


def in_fresh_process(*args, **kwargs) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(one_fold, *args, **kwargs).result()


def with_rates(row: dict, rate: float, *, unit_epochs: int) -> dict:
    """The row with its training rate, that rate's limit at ``rate`` multiply-adds/s, and the whole unit split.

    The unit: the fold's fixed cost once (build, prefix pass, tracing), then
    per fold ``unit_epochs`` steady epochs and the test and features (the
    first fold's reads, which trace, and four of a later fold's).  Its
    time splits into the arithmetic floor (all its multiply-adds at
    ``rate``), the per-step overhead (steady epochs beyond their arithmetic)
    and the fixed cost (the time outside the steady epochs beyond its own
    arithmetic: building, tracing, prediction calls); the three sum to the
    unit.
    """
    from ultrasound_transfer.networks.cost import SplitMacs, unit_work

    frozen = 0 if row["cached"] else row["prefix_macs"]
    per_training_image, per_evaluated_image = 3 * row["tail_macs"] + frozen, row["tail_macs"] + frozen
    row["limit_macs_per_s"] = rate
    row["training_images_per_s"] = row["fit_images"] / row["steady_epoch_s"]
    # What a steady epoch's arithmetic ran at, per-step overhead included: the rate a protocol's estimate can use.
    steady_epoch_macs = row["fit_images"] * per_training_image + row["validation_images"] * per_evaluated_image
    row["steady_macs_per_s"] = steady_epoch_macs / row["steady_epoch_s"]
    row["limit_images_per_s"] = rate / per_training_image
    row["share_of_limit"] = row["training_images_per_s"] / row["limit_images_per_s"]
    fixed = row["before_training_s"] + row["first_epoch_s"] - row["steady_epoch_s"]
    steady_epochs_s = FOLDS * unit_epochs * row["steady_epoch_s"]
    reads_s = row["test_and_features_s"] + (FOLDS - 1) * row["later_test_and_features_s"]
    row["unit_estimate_s"] = fixed + steady_epochs_s + reads_s
    steady_floor_s = FOLDS * unit_epochs * steady_epoch_macs / rate
    work = unit_work(SplitMacs(prefix=row["prefix_macs"], tail=row["tail_macs"]), images=row["images"],
                     folds=FOLDS, epochs=unit_epochs, validation_fraction=VALIDATION_SHARE / (1 - 1 / FOLDS),
                     cached=row["cached"])
    row["unit_floor_s"] = work.total / rate
    row["unit_step_overhead_s"] = steady_epochs_s - steady_floor_s
    row["unit_fixed_s"] = row["unit_estimate_s"] - row["unit_floor_s"] - row["unit_step_overhead_s"]
    return row


def rows_table(rows: list[dict]) -> str:
    def limit(row: dict) -> str:
        return f"{row['limit_images_per_s']:,.0f} ({row['share_of_limit']:.0%})"

    def memory(row: dict) -> str:
        device = row["accelerator_peak_mb"]
        return f"{row['host_peak_mb']:,.0f}" + (f" / {device:,.0f}" if device is not None else "")

    return markdown_table(
        [[r["model"], f"{r['ft_fraction']:g}", r["precision"], r["image_size"], r["path"],
          f"{r['before_training_s']:.1f}",
          f"{r['first_epoch_s']:.1f}", f"{r['steady_epoch_s']:.2f}", f"{r['training_images_per_s']:,.0f}", limit(r),
          f"{r['unit_estimate_s'] / 60:.1f}", memory(r)] for r in rows],
        ["network", "ft_fraction", "precision", "px", "path", "before training, s", "first epoch, s", "steady epoch, s",
         "training images/s", "limit images/s (reached)", "unit estimate, min", "peak MB: host / GPU"])


def breakdown_table(rows: list[dict]) -> str:
    """The whole unit's estimate in three parts, each with its share, beside the arithmetic floor's rate."""
    def part(row: dict, key: str) -> str:
        return f"{row[key]:,.0f} ({row[key] / row['unit_estimate_s']:.0%})"

    return markdown_table(
        [[r["model"], f"{r['ft_fraction']:g}", r["precision"], r["image_size"],
          f"{r['limit_macs_per_s'] * 2 / 1e9:,.0f}", f"{r['unit_estimate_s']:,.0f}", part(r, "unit_floor_s"),
          part(r, "unit_step_overhead_s"), part(r, "unit_fixed_s"), f"{r['host_peak_mb']:,.0f}"] for r in rows],
        ["network", "ft_fraction", "precision", "px", "limit GFLOP/s", "unit, s", "arithmetic floor, s",
         "per-step overhead, s", "fixed cost, s", "peak host MB"])


def results_note(args: argparse.Namespace, device: str, backend: str) -> str:
    peaks = {p: peak_macs_per_s(device, p, None) for p in args.precisions}
    sheet = "; ".join(f"{p} {2 * v / 1e12:,.0f} TFLOP/s" for p, v in peaks.items() if v)
    limit = (f"a stated {args.peak_tflops:g} TFLOP/s" if args.peak_tflops else
             "the matrix rate measured in the row's process (a large matrix product in its precision)")
    rounds = (f"the configurations run in turn {args.rounds} times, each row the round with the least unit time"
              if args.rounds > 1 else "one run per row")
    return (f"Device: {device}, Keras backend {backend}; one fold of five of a unit of {args.images} phantom images, "
            f"batch {args.batch_size}, {args.epochs} epochs timed (the first compiles), {rounds}; the unit counts "
            f"{args.unit_epochs} epochs per fold. Limit: {limit}, over the multiply-adds of one training image on "
            "the path taken" + (f" (the data sheet's peak: {sheet})." if sheet else "."))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ResNet50", "VGG16"])
    parser.add_argument("--ft-fractions", nargs="+", type=float, default=[0.15, 1.0])
    parser.add_argument("--precisions", nargs="+", default=["mixed_bfloat16", "float32"], choices=PRECISIONS)
    parser.add_argument("--images", type=int, default=780, help="BUSI's 780 images")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[224])
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per row (the first compiles)")
    parser.add_argument("--unit-epochs", type=int, default=15, help="epochs per fold in the unit estimate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--peak-tflops", type=float,
                        help="a stated TFLOP/s for the limit instead of the measured matrix rate")
    parser.add_argument("--rounds", type=int, default=1,
                        help="every configuration in turn this many times; each keeps its fastest unit (the GPU "
                             "run keeps 1: its time is short)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    import keras

    backend, device = keras.backend.backend(), device_name()
    print(f"device: {device}, Keras backend {backend}", flush=True)
    configurations = [(model_name, ft_fraction, precision, image_size) for image_size in args.image_sizes
                      for model_name in args.models for ft_fraction in args.ft_fractions
                      for precision in args.precisions]
    fastest: dict[tuple, dict] = {}
    for round_number in range(1, args.rounds + 1):
        for configuration in configurations:     # every configuration in turn, round after round
            model_name, ft_fraction, precision, image_size = configuration
            row = in_fresh_process(model_name, ft_fraction, precision, image_size=image_size, images=args.images,
                                   epochs=args.epochs, batch_size=args.batch_size)
            stated = args.peak_tflops and peak_macs_per_s(device, precision, args.peak_tflops)
            row = with_rates(row, stated or row["matrix_macs_per_s"], unit_epochs=args.unit_epochs)
            print(f"round {round_number}: {model_name} {ft_fraction:g} {precision} {image_size} px: "
                  f"{row['training_images_per_s']:,.0f} training images/s ({row['share_of_limit']:.0%} of the limit), "
                  f"steady epoch {row['steady_epoch_s']:.2f} s, unit about {row['unit_estimate_s'] / 60:.1f} min",
                  flush=True)
            if configuration not in fastest or row["unit_estimate_s"] < fastest[configuration]["unit_estimate_s"]:
                fastest[configuration] = row | {"round": round_number}
            rows = [fastest[c] for c in configurations if c in fastest]
            write_results(f"device_unit_{backend}", {"device": device, "backend": backend, "rows": rows},
                          {"table": rows_table(rows), "breakdown": breakdown_table(rows)},
                          note=results_note(args, device, backend), directory=args.results_dir,
                          benchmark="device_unit")
    print(rows_table(rows))
    print(breakdown_table(rows))


if __name__ == "__main__":
    main()
