"""Fine-tuning speed: plain Keras ``fit`` on the full network against the frozen-prefix cache.

``python -m benchmarks.finetune_speed`` trains, for each network and
``ft_fraction``, the same phantom images (96 for training, 32 for testing,
whole patients apart) for the same epochs twice, side by side in one run:

* **plain**: ``fit`` on the full network, every image through every layer in
  every epoch (``finetune.frozen_prefix_cache: false``);
* **fast**: the project's path, which runs the frozen prefix once and trains
  the tail on its cached outputs (the default).

Both start from the same initial weights and see the same batches.  Each run
is a fresh process, so that its peak resident memory is its own.  Times are
end to end after the network is built: cache computation, compilation, all
epochs and the test predictions.  Prints a table and writes
``benchmarks/results/finetune_speed.json`` (and the table the docs include, ``.md``): rows ``{model, ft_fraction,
epochs, plain_s, fast_s, speedup, max_abs_prob_diff, peak_rss_mb}`` (the fast
run's peak; ``plain_peak_rss_mb`` is the plain run's).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tabulate import tabulate

from benchmarks.results import markdown_table, write_results
from ultrasound_transfer.settings import HeadSettings, PhantomSettings, PrefixCacheSettings

MODELS = ["VGG16", "VGG19", "ResNet50", "ResNet101", "InceptionV3"]


def phantom_images(image_size: int, count: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``count`` letterboxed phantom images (4 per patient) and their labels."""
    from ultrasound_transfer.data.imaging import letterbox
    from ultrasound_transfer.data.phantom import CLASS_NAMES, generate
    images = generate(PhantomSettings(count=count, seed=7))
    pixels = np.stack([letterbox(image.pixels, image_size) for image in images])
    return pixels, np.array([CLASS_NAMES.index(image.label) for image in images])


def train_once(model_name: str, ft_fraction: float, fast: bool, image_size: int, epochs: int,
               batch_size: int) -> dict:
    """One training run in this process: seconds, test probabilities, peak memory."""
    import keras

    from ultrasound_transfer.networks.backbones import build_classifier
    from ultrasound_transfer.networks.fitting import compile_classifier, fit_fold
    from ultrasound_transfer.networks.runtime import seed_everything
    from ultrasound_transfer.networks.training_paths import choose_training_path

    images, labels = phantom_images(image_size)
    train, test = np.arange(96), np.arange(96, len(images))
    seed_everything(42)
    model, _ = build_classifier(model_name, image_size=image_size, n_classes=2, weights="none",
                                ft_fraction=ft_fraction, head=HeadSettings(256, 0.5))
    started = time.perf_counter()
    with choose_training_path(model, images, model_name=model_name, batch_size=batch_size,
                              cache=PrefixCacheSettings(enabled=fast)) as path:
        compile_classifier(path.model, optimizer="adam", learning_rate=1e-4)
        seed_everything(43)
        fit_fold(path.model, path.batches(train, labels, seed=43), None, epochs=epochs, patience=1, class_weight=None,
                 progress=keras.callbacks.Callback())
        probs = path.model.predict(path.batches(test), verbose=0)
        description = path.description
    return {
        "seconds": time.perf_counter() - started,
        "probs": probs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "path": description["path"],
        "cached_layers": description.get("cached_layers", []),
    }


def in_fresh_process(*args) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(train_once, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.15, 0.5])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=80, help="the demo's image_size")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    rows = []
    for model_name in args.models:
        for fraction in args.fractions:
            plain, fast = (in_fresh_process(model_name, fraction, fast_path, args.image_size, args.epochs,
                                            args.batch_size) for fast_path in (False, True))
            rows.append({
                "model": model_name, "ft_fraction": fraction, "epochs": args.epochs,
                "plain_s": round(plain["seconds"], 2), "fast_s": round(fast["seconds"], 2),
                "speedup": round(plain["seconds"] / fast["seconds"], 2),
                "max_abs_prob_diff": float(np.abs(plain["probs"] - fast["probs"]).max()),
                "peak_rss_mb": round(fast["peak_rss_mb"]), "plain_peak_rss_mb": round(plain["peak_rss_mb"]),
                "cached_layers": fast["cached_layers"],
            })
            print(f"{model_name} ft_fraction={fraction}: plain {plain['seconds']:.1f} s, fast {fast['seconds']:.1f} s "
                  f"({fast['path']}), speedup {rows[-1]['speedup']}x, max |dp| {rows[-1]['max_abs_prob_diff']:.1e}",
                  flush=True)
    shown = [{k: v for k, v in row.items() if k != "cached_layers"} for row in rows]
    print(tabulate(shown, headers="keys", floatfmt=".3g"))
    table = markdown_table(
        [[r["model"], f"{r['ft_fraction']:g}", f"{r['plain_s']:.1f}", f"{r['fast_s']:.1f}", f"{r['speedup']:.1f}×",
          f"{r['max_abs_prob_diff']:.2g}", f"{r['peak_rss_mb']} / {r['plain_peak_rss_mb']}"] for r in rows],
        ["model", "ft_fraction", "plain fit, s", "cached, s", "speedup", "max \\|Δp\\|",
         "peak RSS, MB (cached / plain)"])
    write_results("finetune_speed", rows, {"table": table})


if __name__ == "__main__":
    main()
