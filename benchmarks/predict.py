"""How fast ``ultrasound-transfer predict`` reads new scans, beside the networks' own forward time.

``python -m benchmarks.predict`` (after ``dvc repro``: it reads the
workspace's trained study) writes ``--images`` PNG files (the dataset's raw
frames, copied round-robin under new names), and per network, side by side
in one process:

* **predict**: what the command does after loading, files to table: decode,
  gray, square, the ensemble network, the rows (images/s);
* **ensemble forward**: the ensemble network alone on the same squares, in
  the command's batches: the frozen prefix once, each split's tail;
* **K plain networks**: each split's fine-tuned network through plain Keras
  in the same batches (``predict_on_batch``, the call the command makes),
  one after the other, as an ensemble without the shared prefix would run;
* the **arithmetic**: multiply-adds per image of the ensemble (prefix + K
  tails) against K whole networks, the gain sharing the prefix can give.

Loading (building K networks from the trained study) and tracing the ensemble's
graph for the batch shapes are fixed costs per command, reported apart.  The
three timed parts run in turn ``--rounds`` times (3), each keeping its
fastest round; the plain networks keep each network's fastest round, as the
ensemble does.  Both run the same call on the same batches, so that their
ratio is the networks' and not the calls' (why: docs/using-the-model.md,
"Speed and memory").  The process
keeps freed memory for the next step, as the command's entry point does
(:mod:`ultrasound_transfer.networks.heap`).  On TensorFlow the results
record how often a network was traced inside the timed calls (none is
expected).
Writes ``benchmarks/results/predict.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.results import RESULTS_DIR, markdown_table, write_results


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def tracing_count(models: list) -> int | None:
    """How often TensorFlow traced ``models``' predict steps in all; None on a backend without tracing counts."""
    counts = [getattr(getattr(model, "predict_function", None), "experimental_get_tracing_count", None)
              for model in models]
    return sum(count() for count in counts) if all(counts) else None


def tracing_sentence(traced: list[int | None]) -> str:
    """What the tracing counts of the timed calls say, per network (None: a backend that does not count)."""
    if None in traced:
        return "This backend does not count its traces: the timed calls may include tracing."
    if not any(traced):
        return "No network was traced inside a timed call (TensorFlow's tracing counts)."
    return f"Networks were traced inside the timed calls ({sum(traced)} times): these times include tracing."


def scan_folder(dataset: str, count: int, folder: Path) -> list[Path]:
    """``count`` PNG files: the dataset's raw frames, copied round-robin."""
    from ultrasound_transfer.paths import RAW_DIR

    sources = sorted((RAW_DIR / dataset).rglob("*.png"))
    if not sources:
        raise SystemExit(f"no PNG frames under {RAW_DIR / dataset}; run 'dvc repro' first.")
    files = []
    for i in range(count):
        target = folder / f"scan{i:05d}.png"
        shutil.copy(sources[i % len(sources)], target)
        files.append(target)
    return files


def measure(dataset: str, model_name: str, files: list[Path], rounds: int = 3) -> dict:
    from ultrasound_transfer.deployment.predict import (
        PREDICT_BATCH,
        array_batches,
        ensemble_probabilities,
        frame_rows,
        in_batches,
        squared_frames,
    )
    from ultrasound_transfer.deployment.trained import load_trained_network
    from ultrasound_transfer.networks.backbones import to_network_input
    from ultrasound_transfer.networks.cost import split_macs

    loading, trained = timed(lambda: load_trained_network(dataset, model_name))
    size = trained.image_size
    # Trace both batch shapes the timed calls use (full batches and the last, shorter one), apart: tracing is a
    # fixed cost of a command, like loading, not a cost per image.
    shapes = sorted({PREDICT_BATCH, len(files) % PREDICT_BATCH or PREDICT_BATCH})
    tracing, _ = timed(lambda: [ensemble_probabilities(trained, np.zeros((n, size, size), np.float32))
                                for n in shapes])

    def predict_files():
        """What the command does after loading: frames streamed through, a batch at a time, into rows."""
        rows, squares = [], []
        for batch in in_batches(squared_frames(files, image_size=size, resize=trained.resize), PREDICT_BATCH):
            batch_squares = np.stack([frame.square for frame in batch])
            rows += frame_rows(trained, batch, ensemble_probabilities(trained, batch_squares))
            squares.append(batch_squares)
        return rows, np.concatenate(squares)

    _, (table, squares) = timed(predict_files)
    inputs = to_network_input(squares.astype(np.uint8), model_name)
    # Each split's network traced for the same two shapes, as the ensemble was.  TensorFlow may warn of
    # "retracing" here: its detector counts the K networks' predict steps, one Python function, as one; each
    # traces its own shapes once, and the counts kept below show whether any traces again while timed.
    for fold in trained.folds:
        for n in shapes:
            fold.predict_on_batch(inputs[:n])

    def plain_network(fold) -> list:
        """One split's whole network on the squares, in the command's batches and call."""
        return [fold.predict_on_batch(batch) for batch in array_batches(inputs, PREDICT_BATCH)]

    networks = [trained.network, *trained.folds]
    traced_before = tracing_count(networks)
    # The three in turn, ``rounds`` times, each keeping its fastest: a slow spell touches all alike.  The plain
    # networks keep each network's fastest round (module docstring).
    runs: dict[str, list[float]] = {"whole": [], "forward": []}
    plain_calls: list[list[float]] = [[] for _ in trained.folds]
    for _ in range(rounds):
        runs["whole"].append(timed(predict_files)[0])
        runs["forward"].append(timed(partial(ensemble_probabilities, trained, squares))[0])   # a batch at a time
        for fold, calls in zip(trained.folds, plain_calls):
            calls.append(timed(partial(plain_network, fold))[0])
    traced_after = tracing_count(networks)
    whole, forward = min(runs["whole"]), min(runs["forward"])
    plain = sum(min(calls) for calls in plain_calls)
    macs = split_macs(trained.folds[0])
    k = len(trained.folds)
    return {"model": model_name, "images": len(files), "splits": k, "loading_s": loading, "tracing_s": tracing,
            "predict_s": whole,
            "ensemble_forward_s": forward, "plain_networks_s": plain, "rows": len(table),
            "traced_while_timed": None if traced_before is None else traced_after - traced_before,
            "ensemble_macs_per_image": macs.prefix + k * macs.tail,
            "plain_macs_per_image": k * (macs.prefix + macs.tail)}


def main() -> None:
    from ultrasound_transfer.choices import MODELS
    from ultrasound_transfer.networks.heap import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="phantom")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="each measurement in turn, the fastest kept")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where predict.json and .md go")
    args = parser.parse_args()
    keep_freed_memory()     # as the command's entry point does
    with tempfile.TemporaryDirectory(prefix="predict-benchmark-") as folder:
        files = scan_folder(args.dataset, args.images, Path(folder))
        figures = [measure(args.dataset, name, files, args.rounds) for name in args.models]
    rows = [[f["model"], f"{f['images'] / f['predict_s']:.0f}", f"{f['images'] / f['ensemble_forward_s']:.0f}",
             f"{f['predict_s'] / f['ensemble_forward_s']:.2f}×",
             f"{f['plain_networks_s'] / f['ensemble_forward_s']:.2f}×",
             f"{f['plain_macs_per_image'] / f['ensemble_macs_per_image']:.2f}×",
             f"{f['loading_s']:.1f} + {f['tracing_s']:.1f}"]
            for f in figures]
    table = markdown_table(rows, ["network", "predict, images/s", "ensemble forward, images/s",
                                  "predict / forward", f"{figures[0]['splits']} plain networks / ensemble",
                                  "arithmetic limit of that", "loading + tracing, s"])
    note = (f"{args.images} PNG frames of `{args.dataset}` at the study's `image_size`, the ensemble of "
            f"{figures[0]['splits']} splits. *predict / forward*: the whole command after loading (decoding, "
            "squaring, rows) over the network alone; *plain networks / ensemble*: the splits' networks run one "
            "by one through plain Keras, in the same batches and calls, over the ensemble, which runs the frozen "
            "prefix once; its arithmetic limit is the ratio of their multiply-adds; each plain network's fastest "
            "round is kept, as the ensemble's is. The process keeps freed memory for the next step, as the "
            "command does.")
    write_results("predict", {"dataset": args.dataset, "figures": figures},
                  {"predict": table, "tracing": tracing_sentence([f["traced_while_timed"] for f in figures])},
                  note=note, directory=args.results_dir)


if __name__ == "__main__":
    main()
