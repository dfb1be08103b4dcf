"""Seconds per training epoch: plain Keras ``fit`` against the cached path, for every network and strategy.

``python -m benchmarks.epochs`` trains, side by side in one run, each network
at each ``ft_fraction`` (0, 0.15 and 0.5 by default) and image size (the
demo's 80 px and the paper's 224 px) two ways, each in a fresh process:

* **plain**: Keras ``model.fit`` on image arrays, as users write it; Keras
  shuffles and the whole network runs in every epoch, frozen part included;
* **cached**: the project's path as ``finetune`` takes it
  (:func:`~ultrasound_transfer.networks.training_paths.choose_training_path`
  and :func:`~ultrasound_transfer.networks.fitting.fit_fold`): the frozen
  prefix once, then the tail on its cached outputs, fed as the stage feeds it;
* **memory-mapped**: the same path with the cache on disk, as ``finetune``
  takes it for a cache over ``finetune.cache_memory_mb`` (2 GiB by default;
  here the limit is set to 0 so that the demo's small caches go there too).

The paths run in turn ``--rounds`` times (3: plain, cached, memory-mapped,
plain...); the table gives each path's fastest round and, beside it, the
range of the ratios within each round, so that a ratio near 1 can be told
from noise; the JSON keeps every round.  The Keras backend is the
environment's (``KERAS_BACKEND``): on PyTorch and JAX the cached path is fed
batch by batch from host arrays, on TensorFlow through ``tf.data``.  Every path's process, plain
included, keeps freed memory between steps as the stage's does
(:mod:`ultrasound_transfer.networks.heap`; ``benchmarks.heap`` measures that
setting on its own), so the ratios are the cache's alone.  Each row gives the steady-state
epoch (the median after the first), the fixed cost before it (building,
tracing and, cached, the prefix pass), the peak resident memory of each
path's process and the ideal
speedup from multiply-adds, ``1 + prefix / (3 x tail)`` (a training step is
about three forward passes of what it trains;
:mod:`ultrasound_transfer.networks.cost`).  Random weights and phantom images:
speed does not depend on what the weights are.  Writes
``benchmarks/results/epochs_<backend>.json`` and the table the docs include, ``epochs_<backend>.md``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tabulate import tabulate

from benchmarks.results import markdown_table, write_results
from ultrasound_transfer.networks.heap import keep_freed_memory
from ultrasound_transfer.settings import HeadSettings, PhantomSettings

MODELS = ["VGG16", "VGG19", "ResNet50", "ResNet101", "InceptionV3"]
# The ways to train compared, in the order each round runs them.
PATHS = ("plain", "cached", "memory-mapped")


def phantom_images(image_size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    from ultrasound_transfer.data.imaging import letterbox
    from ultrasound_transfer.data.phantom import CLASS_NAMES, generate
    images = generate(PhantomSettings(count=count, seed=7, native_size=256))
    return (np.stack([letterbox(image.pixels, image_size) for image in images]),
            np.array([CLASS_NAMES.index(image.label) for image in images]))


def epoch_times(model_name: str, ft_fraction: float, path_name: str, image_size: int, images: int, epochs: int,
                batch_size: int) -> dict:
    """Seconds of the steady epoch, and of everything before the first, for one path of :data:`PATHS` in this
    process (freed memory kept, as the stage's process does: :mod:`ultrasound_transfer.networks.heap`)."""
    keep_freed_memory()
    import keras

    from ultrasound_transfer.networks.backbones import build_classifier, to_network_input
    from ultrasound_transfer.networks.fitting import compile_classifier, fit_fold
    from ultrasound_transfer.networks.runtime import seed_everything
    from ultrasound_transfer.networks.training_paths import choose_training_path
    from ultrasound_transfer.settings import PrefixCacheSettings

    pixels, labels = phantom_images(image_size, images)
    seed_everything(1)
    model, _ = build_classifier(model_name, image_size=image_size, n_classes=2, weights="none",
                                ft_fraction=ft_fraction, head=HeadSettings(256, 0.5))
    ticks: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ticks.append(time.perf_counter()))
    started = time.perf_counter()
    if path_name != "plain":
        cache = PrefixCacheSettings(memory_mb=0 if path_name == "memory-mapped" else 2048)
        with tempfile.TemporaryDirectory() as scratch, choose_training_path(
                model, pixels, model_name=model_name, batch_size=batch_size, cache=cache,
                scratch_dir=scratch) as path:
            compile_classifier(path.model, optimizer="adam", learning_rate=1e-4)
            fit_fold(path.model, path.batches(np.arange(images), labels, seed=1), None, epochs=epochs, patience=1,
                     class_weight=None, progress=timer)
            taken = " ".join(filter(None, [path.description["path"], path.description.get("cache_storage")]))
    else:
        x = to_network_input(pixels, model_name)
        compile_classifier(model, optimizer="adam", learning_rate=1e-4)
        model.fit(x, labels, batch_size=batch_size, epochs=epochs, callbacks=[timer], verbose=0)
        taken = "plain fit"
    steady = float(np.median(np.diff(ticks)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steady_s": steady, "fixed_s": ticks[0] - started - steady, "path": taken, "peak_mb": peak_mb}


def in_fresh_process(*args) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(epoch_times, *args).result()


def epoch_row(model_name: str, ft_fraction: float, *, image_size: int, images: int, epochs: int,
              batch_size: int, rounds: int = 3) -> dict:
    from ultrasound_transfer.networks.backbones import build_classifier
    from ultrasound_transfer.networks.cost import split_macs

    # The paths in turn, ``rounds`` times (ABCABC...): a slow spell of the machine then touches all alike.  The
    # table's epochs are each path's fastest round; every round is kept, and each round's ratios are shown, so
    # a row can be checked against its own rounds.
    runs: dict[str, list[dict]] = {name: [] for name in PATHS}
    for _ in range(rounds):
        for name in PATHS:
            runs[name].append(in_fresh_process(model_name, ft_fraction, name, image_size, images, epochs, batch_size))
    best = {name: {"steady_s": min(r["steady_s"] for r in done), "fixed_s": min(r["fixed_s"] for r in done),
                   "peak_mb": max(r["peak_mb"] for r in done), "path": done[0]["path"]}
            for name, done in runs.items()}
    plain, cached, mapped = best["plain"], best["cached"], best["memory-mapped"]
    macs = split_macs(build_classifier(model_name, image_size=image_size, n_classes=2, weights="none",
                                       ft_fraction=ft_fraction, head=HeadSettings(256, 0.5))[0])
    return {"model": model_name, "image_size": image_size, "ft_fraction": ft_fraction, "images": images,
            "epochs": epochs, "batch_size": batch_size, "cached_path": cached["path"],
            "mapped_path": mapped["path"],
            "plain_epoch_s": plain["steady_s"], "cached_epoch_s": cached["steady_s"],
            "mapped_epoch_s": mapped["steady_s"],
            "speedup": plain["steady_s"] / cached["steady_s"],
            "mapped_speedup": plain["steady_s"] / mapped["steady_s"], "ideal_speedup": macs.ideal_epoch_speedup,
            "plain_fixed_s": plain["fixed_s"], "cached_fixed_s": cached["fixed_s"], "mapped_fixed_s": mapped["fixed_s"],
            "rounds": rounds, "plain_peak_mb": plain["peak_mb"], "cached_peak_mb": cached["peak_mb"],
            "mapped_peak_mb": mapped["peak_mb"],
            "round_speedups": round_ratios(runs["plain"], runs["cached"]),
            "round_mapped_speedups": round_ratios(runs["plain"], runs["memory-mapped"]), "runs": runs}


def round_ratios(plain: list[dict], other: list[dict]) -> list[float]:
    """Plain's steady epoch over the other path's, round by round (the two ran one after the other)."""
    return [p["steady_s"] / o["steady_s"] for p, o in zip(plain, other)]


def ratio_range(ratios: list[float]) -> str:
    return f"{min(ratios):.2f}–{max(ratios):.2f}×"


def epochs_table(rows: list[dict]) -> str:
    return markdown_table(
        [[r["model"], f"{r['image_size']}", f"{r['ft_fraction']:g}", f"{r['plain_epoch_s']:.3g}",
          f"{r['cached_epoch_s']:.3g}", f"{r['mapped_epoch_s']:.3g}",
          f"{r['speedup']:.2f}× / {r['mapped_speedup']:.2f}×",
          f"{ratio_range(r['round_speedups'])} / {ratio_range(r['round_mapped_speedups'])}",
          f"{r['ideal_speedup']:.2f}×",
          f"{r['plain_fixed_s']:.3g} / {r['cached_fixed_s']:.3g} / {r['mapped_fixed_s']:.3g}",
          f"{r['plain_peak_mb']:,.0f} / {r['cached_peak_mb']:,.0f} / {r['mapped_peak_mb']:,.0f}"] for r in rows],
        ["network", "px", "ft_fraction", "plain epoch, s", "cached epoch, s", "memory-mapped epoch, s",
         "speedup (cached / mapped)", "per-round speedups (cached / mapped)", "ideal (MACs)",
         "fixed, s (plain / cached / mapped)",
         "peak MB (plain / cached / mapped)"])


def results_note(args: argparse.Namespace, backend: str) -> str:
    return (f"Keras backend {backend}; {args.images} phantom images per epoch, batch {args.batch_size}, "
            f"{args.epochs} epochs (the steady epoch is the median after the first), random weights; "
            f"each path in a fresh process, the three in turn {args.rounds} times; the epoch columns and speedups "
            f"are each path's fastest round, the per-round speedups the range of plain's epoch over the other "
            f"path's within each round (every round is in the .json).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.0, 0.15, 0.5])
    parser.add_argument("--image-sizes", nargs="+", type=int, default=[80, 224])
    parser.add_argument("--images", type=int, default=48, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="the three paths in turn this many times")
    args = parser.parse_args()
    import keras

    backend = keras.backend.backend()
    rows = []
    for image_size in args.image_sizes:
        for model_name in args.models:
            for ft_fraction in args.fractions:
                rows.append(epoch_row(model_name, ft_fraction, image_size=image_size, images=args.images,
                                      epochs=args.epochs, batch_size=args.batch_size, rounds=args.rounds))
                print(tabulate([rows[-1]], headers="keys", floatfmt=".3g"), flush=True)
                # A later failure loses nothing.
                write_results(f"epochs_{backend}", {"backend": backend, "rows": rows},
                              {"table": epochs_table(rows)}, note=results_note(args, backend), benchmark="epochs")
    slower = [(r, name, r[key]) for r in rows for name, key in (("cached", "speedup"), ("mapped", "mapped_speedup"))
              if r[key] < 1]
    print(f"{len(rows)} rows on {backend}; a cached path slower than plain in {len(slower)}: "
          + (", ".join(f"{r['model']} {r['ft_fraction']:g} at {r['image_size']} px, {name} ({ratio:.2f}×)"
                       for r, name, ratio in slower) or "none"))


if __name__ == "__main__":
    main()
