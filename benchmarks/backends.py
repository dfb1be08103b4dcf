"""The ``finetune`` stage on each Keras backend: time per network, and how far the predictions differ.

``python -m benchmarks.backends`` runs ``python -m stages.finetune phantom
<network>`` for the five networks, once per backend (TensorFlow, PyTorch,
JAX; those not installed are skipped), each in its own scratch copy of the
default run's inputs (``params.yaml``, the prepared phantom, its folds), so
every backend gets the same params, images and folds.  It needs a finished
default ``dvc repro`` (for those inputs).

Reported per network: the stage's wall time on each backend (a fresh
process: imports, network build, five folds, predictions), its ratio to
TensorFlow, the epochs trained over all folds (early stopping decides), the
dense head's test accuracy, and the largest difference, over all test images of all folds,
between the malignant probabilities of each backend and TensorFlow's, plus
how many test images change their predicted class.  Backends need not agree
bit for bit (their kernels round differently; training amplifies it), so
this says how close "the same experiment" is across them.  Writes
``benchmarks/results/backends.json`` and the table the docs include, ``backends.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from tabulate import tabulate

from benchmarks.results import markdown_table, write_results
from ultrasound_transfer.study.experiments import resolved_params, split_override

# What it runs in other processes, whose code it times too (benchmarks.results.timed_files).
RUNS = ("stages.finetune",)

REPO = Path(__file__).resolve().parents[1]
MODELS = ["VGG16", "VGG19", "ResNet50", "ResNet101", "InceptionV3"]
BACKENDS = ("tensorflow", "torch", "jax")      # each needs the Python module of its name
INPUTS = ["params.yaml", "data/params_checked.json", "data/prepared/phantom", "data/folds/phantom.json",
          "models/backbones"]


def installed_backends(wanted: list[str]) -> list[str]:
    return [name for name in wanted if importlib.util.find_spec(name) is not None]


def scratch_project(root: Path, overrides: dict[str, str]) -> Path:
    """A folder holding copies of the default run's inputs to ``finetune``, ``params.yaml`` with ``overrides``."""
    for relative in INPUTS:
        source = REPO / relative
        if not source.exists():
            raise SystemExit(f"{relative} is missing: run the default `dvc repro` first")
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    params = resolved_params(overrides, (root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_finetune(project: Path, backend: str, model: str) -> tuple[float, pd.DataFrame, int]:
    """Seconds of one ``finetune`` stage process, its dense predictions and its epochs over all folds."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages.finetune", "phantom", model], cwd=project, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    training = project / f"models/phantom/{model}/training"
    predictions = pd.read_csv(training / "dense_predictions.csv")
    predictions = predictions[predictions["part"] == "test"]            # not the inner validation images
    epochs = len(pd.read_csv(training / "history.csv"))      # early stopping decides, per backend
    return seconds, predictions.set_index("id").sort_index(), epochs


def dense_accuracy(predictions: pd.DataFrame) -> float:
    """Share of test images whose most probable class is the true one."""
    probabilities = predictions.filter(like="prob_")
    return float((probabilities.to_numpy().argmax(axis=1) == predictions["true"].to_numpy()).mean())


def compare(reference: pd.DataFrame, other: pd.DataFrame) -> dict:
    """Largest |malignant probability difference| and how many test images change class."""
    difference = (reference["prob_malignant"] - other["prob_malignant"]).abs()
    flipped = (reference["prob_malignant"] >= 0.5) != (other["prob_malignant"] >= 0.5)
    return {"max_abs_prob_diff": float(difference.max()), "mean_abs_prob_diff": float(difference.mean()),
            "class_changes": int(flipped.sum()), "images": len(reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter override, e.g. -S finetune.dropout=0")
    args = parser.parse_args()
    overrides = dict(split_override(item) for item in args.set)
    backends = installed_backends(args.backends)
    print(f"backends: {', '.join(backends)}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        projects = {name: scratch_project(Path(scratch) / name, overrides) for name in backends}
        for model in args.models:
            runs = {name: run_finetune(projects[name], name, model) for name in backends}
            reference_seconds, reference, _ = runs[backends[0]]
            for name, (seconds, predictions, epochs) in runs.items():
                row = {"model": model, "backend": name, "finetune_s": round(seconds, 1), "epochs": epochs,
                       f"time_vs_{backends[0]}": round(seconds / reference_seconds, 2),
                       "dense_accuracy": round(dense_accuracy(predictions), 3), **compare(reference, predictions)}
                others = [other for other in backends[1:] if other != name]
                if name != backends[0] and others:      # the other backends against each other too
                    row[f"max_abs_prob_diff_vs_{others[0]}"] = compare(runs[others[0]][1], predictions)[
                        "max_abs_prob_diff"]
                rows.append(row)
                print(f"{model} on {name}: {seconds:.1f} s, {epochs} epochs, "
                      f"dense accuracy {row['dense_accuracy']:.3f}, max |dp| vs {backends[0]} "
                      f"{row['max_abs_prob_diff']:.2e}, {row['class_changes']} class changes", flush=True)
    print(tabulate(rows, headers="keys", floatfmt=".3g"))
    table = markdown_table(
        [[r["model"], r["backend"], f"{r['finetune_s']:.0f}", str(r["epochs"]), f"{r['dense_accuracy']:.3f}",
          f"{r['max_abs_prob_diff']:.2g}", str(r["class_changes"])] for r in rows],
        ["network", "backend", "`finetune` stage, s", "epochs (5 folds)", "dense accuracy",
         f"max \\|Δp\\| vs {backends[0]}", f"class changes vs {backends[0]}"])
    shown = " ".join(f"`-S {key}={value}`" for key, value in overrides.items()) or "none (the default run)"
    write_results("backends", {"overrides": overrides, "rows": rows}, {"table": table}, note=f"Overrides: {shown}.")


if __name__ == "__main__":
    main()
