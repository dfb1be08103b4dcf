"""What the paper's study costs: storage of fold networks, whole units, and a queued sweep.

``python -m benchmarks.study_cost`` measures, side by side in one run, at the
paper's 224 px with random weights and few phantom images (this machine has
two CPU cores), and writes ``benchmarks/results/study_cost.json`` and the tables the docs include, ``study_cost.md``:

* ``storage`` rows: megabytes per fold of a whole network's weights (what the
  pipeline stored before) against the trained part the pipeline stores now
  (:mod:`ultrasound_transfer.networks.fold_weights`), per network and strategy,
  and the gigabytes of the full paper grid
  (4 datasets x 5 networks x 4 strategies x 5 folds);
* ``unit`` rows: ``finetune`` (training and features) + ``evaluate`` of one dataset x network
  over 5 folds, the project's stages against a plain-Keras study (fit per fold
  on the full network, features per fold with the full network, the same
  SVM), with the project's time split into prefix passes, tail training,
  features, evaluation and everything else;
* ``sweep`` rows: a 4-strategy sweep through ``dvc exp run --queue`` and then
  the same sweep with another SVM grid, at the commit before this benchmark's
  issue (fold networks outside DVC's cache) and at this one: stage executions
  and wall time, on tiny params.

Each timed training runs in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tabulate import tabulate

from benchmarks.results import RESULTS_DIR, markdown_table, write_results
from tests.conftest import REPO, merged
from ultrasound_transfer.settings import HeadSettings, SvmSettings

# What it runs in other processes, whose code it times too (benchmarks.results.timed_files).
RUNS = ("stages.finetune", "stages.evaluate")

RESULTS = RESULTS_DIR / "study_cost.json"
MODELS = ["VGG16", "VGG19", "ResNet50", "ResNet101", "InceptionV3"]
PAPER_GRID = {"datasets": 4, "networks": 5, "strategies": 4, "folds": 5}
STRATEGIES = (0.0, 0.15, 0.5, 1.0)
BEFORE_REV = "2c0b64e"     # the last commit with fold networks outside DVC's cache


def in_fresh_process(function, *args):
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


# --- storage ----------------------------------------------------------------------------------------

def storage_row(model_name: str, ft_fraction: float) -> dict:
    """File sizes of one fold: the whole network's weights (.weights.h5) and the trained part (.npz)."""
    import keras

    from ultrasound_transfer.networks.backbones import build_classifier
    from ultrasound_transfer.networks.fold_weights import frozen_fingerprint, save_fold_weights

    model, _ = build_classifier(model_name, image_size=75, n_classes=2, weights="none",
                                ft_fraction=ft_fraction, head=HeadSettings(256, 0.5))
    with tempfile.TemporaryDirectory() as scratch:
        whole, part = Path(scratch) / "fold.weights.h5", Path(scratch) / "fold.weights.npz"
        keras.Model(model.inputs, model.outputs).save_weights(whole)
        save_fold_weights(model, part, frozen_fingerprint(model))
        return {"kind": "storage", "model": model_name, "ft_fraction": ft_fraction,
                "whole_mb": whole.stat().st_size / 2**20, "trained_mb": part.stat().st_size / 2**20}


def storage_rows() -> list[dict]:
    rows = [in_fresh_process(storage_row, m, f) for m in MODELS for f in STRATEGIES]
    per_grid = PAPER_GRID["datasets"] * PAPER_GRID["folds"] / 1024      # MB per fold -> GB over the grid
    grid = {column: sum(r[column] for r in rows) * per_grid for column in ("whole_mb", "trained_mb")}
    return rows + [{"kind": "storage", "model": "paper grid (GB)", "ft_fraction": "all", **grid}]


# --- unit -------------------------------------------------------------------------------------------

UNIT_PARAMS = {"datasets": ["phantom"], "image_size": 224, "cv": {"n_splits": 5},
               "download": {"phantom": {"count": 40, "images_per_patient": 2, "native_size": 256, "near_copies": 0}},
               "svm": {"C_grid": [0.01, 0.1, 1.0], "inner_folds": 2}}


def project_unit(workdir: str, model_name: str, ft_fraction: float) -> dict:
    """The project's finetune (which extracts the features) and evaluate stages in ``workdir``, timed, logs kept."""
    times, logs = {}, {}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("finetune", "evaluate"):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", f"stages.{name}", "phantom", model_name], cwd=workdir, env=env,
                              capture_output=True, text=True, check=True)
        times[name], logs[name] = time.perf_counter() - started, done.stdout
    return {"times": times, "logs": logs}


def plain_unit(workdir: str, model_name: str, ft_fraction: float, epochs: int, batch_size: int) -> dict:
    """A plain-Keras study of the same unit: fit per fold on the full network, features per fold, the same SVM."""
    import keras

    os.chdir(workdir)
    from ultrasound_transfer.evaluation.svm import fit_svm
    from ultrasound_transfer.networks.backbones import build_classifier, to_network_input
    from ultrasound_transfer.networks.runtime import seed_everything
    from ultrasound_transfer.outputs.folds import load_fold_groups, load_test_folds, train_indices
    from ultrasound_transfer.outputs.prepared import load_prepared

    started = time.perf_counter()
    data = load_prepared("phantom")
    folds, groups = load_test_folds("phantom", len(data.manifest)), load_fold_groups("phantom")
    x, y = to_network_input(data.images, model_name), data.labels
    accuracies = []
    for k, test in enumerate(folds, start=1):
        seed_everything(k)
        model, _ = build_classifier(model_name, image_size=x.shape[1], n_classes=2, weights="none",
                                    ft_fraction=ft_fraction, head=HeadSettings(256, 0.5))
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
        train = train_indices(test, len(y))
        model.fit(x[train], y[train], batch_size=batch_size, epochs=epochs, verbose=0)
        model.predict(x[test], verbose=0)
        features = keras.Model(model.inputs, model.get_layer("pooled").output).predict(x, verbose=0)
        svm = fit_svm(features[train], y[train], groups[train],
                      svm=SvmSettings(train_on="training", C=1.0, C_grid=(0.01, 0.1, 1.0), inner_folds=2), seed=0)
        accuracies.append(float(np.mean(svm.predict(features[test]) == y[test])))
    return {"seconds": time.perf_counter() - started}


def seconds_in(log: str, pattern: str) -> float:
    """Sum of the '(N.N s)' figures that end lines matching ``pattern`` (the stages print epoch times so)."""
    return sum(float(m) for m in re.findall(pattern + r".*\((\d+\.\d+) s[;)]", log))


def unit_rows(models: list[str], epochs: int, batch_size: int) -> list[dict]:
    import yaml

    rows = []
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as workdir:
        params = merged(yaml.safe_load((root / "params.yaml").read_text()), UNIT_PARAMS)
        params["finetune"].update(epochs=epochs, batch_size=batch_size, validation_fraction=0.0)
        params["evaluation"]["operating_point"] = "argmax"
        (Path(workdir) / "params.yaml").write_text(yaml.safe_dump(params))
        for stage in ("download", "normalize", "folds"):     # as DVC runs them
            subprocess.run([sys.executable, "-m", f"stages.{stage}", "phantom"], cwd=workdir, check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
        for model_name in models:
            ft = 0.15
            params["ft_fraction"] = ft
            (Path(workdir) / "params.yaml").write_text(yaml.safe_dump(params))
            plain = in_fresh_process(plain_unit, workdir, model_name, ft, epochs, batch_size)
            project = in_fresh_process(project_unit, workdir, model_name, ft)
            total = sum(project["times"].values())
            log = project["logs"]["finetune"]
            training = seconds_in(log, r"epoch \d+/\d+")
            prefix = float(re.search(r"path=.*\((\d+\.\d+) s\)", log).group(1)) - float(
                re.search(r"trains \d+/\d+ weight layers.*\((\d+\.\d+) s\)", log).group(1))
            features = seconds_in(log, r"features of \d+ images")
            evaluation = project["times"]["evaluate"]
            other = total - training - prefix - features - evaluation
            rows.append({"kind": "unit", "model": model_name, "ft_fraction": ft, "image_size": 224,
                         "images": UNIT_PARAMS["download"]["phantom"]["count"], "epochs": epochs,
                         "plain_s": plain["seconds"], "project_s": total, "speedup": plain["seconds"] / total,
                         "prefix_s": prefix, "training_s": training, "features_s": features,
                         "evaluate_s": evaluation, "overhead_share": other / total})
            print(tabulate([rows[-1]], headers="keys", floatfmt=".3g"), flush=True)
    return rows


# --- sweep ------------------------------------------------------------------------------------------

SWEEP_PARAMS = {"datasets": ["phantom"], "models": ["VGG16", "ResNet50"], "image_size": 32,
                "download": {"phantom": {"count": 24, "images_per_patient": 2, "native_size": 48}},
                "cv": {"n_splits": 3}, "finetune": {"epochs": 1, "batch_size": 8, "validation_fraction": 0.0},
                "svm": {"C_grid": [0.1, 1.0], "inner_folds": 2}, "evaluation": {"operating_point": "argmax"}}


def sweep_row(rev: str, label: str) -> dict:
    """Queue the 4 strategies, run them; then again with another SVM grid. Count stage executions."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def sh(*args, cwd):
        return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout

    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        sh("git", "clone", "-q", str(root), str(repo), cwd=scratch)
        sh("git", "checkout", "-q", rev, cwd=repo)
        for generated in ("dvc.lock",):
            (repo / generated).unlink(missing_ok=True)
        params = merged(yaml.safe_load((repo / "params.yaml").read_text()), SWEEP_PARAMS)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        git = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
        sh(*git, "commit", "-qam", "tiny", cwd=repo)
        sh("dvc", "repro", cwd=repo)
        sh("git", "add", "-A", cwd=repo)
        sh(*git, "commit", "-qm", "baseline", cwd=repo)
        counts, started = {}, time.perf_counter()
        for round_, extra in (("sweep", []), ("svm", ["-S", "svm.C_grid=[0.01,1.0]"])):
            for ft in STRATEGIES:
                sh("dvc", "exp", "run", "--queue", "--name", f"{round_}-{ft:g}", "-S", f"ft_fraction={ft:g}", *extra,
                   cwd=repo)
            sh("dvc", "queue", "start", cwd=repo)
            while re.search(r"\b(Queued|Running)\b", sh("dvc", "queue", "status", cwd=repo)):
                time.sleep(2)
            for ft in STRATEGIES:
                log = sh("dvc", "queue", "logs", f"{round_}-{ft:g}", cwd=repo)
                for stage in re.findall(r"Running stage '([^'@]+)", log):
                    counts[stage] = counts.get(stage, 0) + 1
        sh("dvc", "queue", "stop", cwd=repo)
        return {"kind": "sweep", "code": label, "rev": rev, "wall_s": time.perf_counter() - started,
                "stage_runs": counts, "finetune_runs": counts.get("finetune", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["storage", "unit", "sweep"],
                        choices=["storage", "unit", "sweep"])
    parser.add_argument("--unit-models", nargs="+", default=["ResNet50", "InceptionV3"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    # Rows measured again replace their old selves; the rest of the file stays.
    rows = [r for r in rows if r["kind"] not in args.parts
            or (r["kind"] == "unit" and r["model"] not in args.unit_models)]
    parts = {
        "storage": storage_rows,
        "unit": lambda: unit_rows(args.unit_models, args.epochs, args.batch_size),
        "sweep": lambda: [sweep_row(BEFORE_REV, "before"), sweep_row("HEAD", "after")],
    }
    for part in args.parts:
        new = parts[part]()
        print(tabulate(new, headers="keys", floatfmt=".3g"), flush=True)
        rows += new
        write_results("study_cost", rows, markdown_tables(rows))     # after each part: a later failure loses nothing


def markdown_tables(rows: list[dict]) -> dict[str, str]:
    """The storage and unit tables of the docs, from every row measured so far."""
    tables = {}
    storage = [r for r in rows if r["kind"] == "storage"]
    if storage:
        by_model: dict[str, list[dict]] = {}
        for row in storage:
            by_model.setdefault(row["model"], []).append(row)
        tables["storage"] = markdown_table(
            [[model, f"{max(r['whole_mb'] for r in group):.1f}",
              " / ".join(f"{r['trained_mb']:.1f}" for r in sorted(group, key=lambda r: r["ft_fraction"]))]
             for model, group in by_model.items()],
            ["network", "whole network, MB", "trained part at " + " / ".join(f"{f:g}" for f in STRATEGIES) + ", MB"])
    units = [r for r in rows if r["kind"] == "unit"]
    if units:
        tables["unit"] = markdown_table(
            [[r["model"], f"{r['plain_s']:.1f}", f"{r['project_s']:.1f}", f"{r['speedup']:.2f}×",
              f"{r['prefix_s']:.1f} s", f"{r['training_s']:.1f} s", f"{r['features_s']:.1f} s",
              f"{r['evaluate_s']:.1f} s", f"{100 * r['overhead_share']:.1f} %"] for r in units],
            ["network at 0.15", "plain Keras, s", "project, s", "speedup", "prefix passes", "tail training",
             "features", "evaluate", "everything else"])
    return tables


if __name__ == "__main__":
    main()
