"""What 16-bit arithmetic does to the study's results: the demo run again in bf16, paired split by split.

``python -m benchmarks.precision_effect`` (after ``dvc repro``: the workspace
up to date at ``finetune.precision: float32``) runs the pipeline once more as
a temporary DVC experiment with ``finetune.precision`` set to ``--precision``
(default ``mixed_bfloat16``: on a CPU with AMX, and on a GPU's tensor cores,
the matrix products run in bf16; the softmax stays float32), on the same
data, folds and seeds.  Then, per network and classifier:

* the **per-split ROC-AUC difference** (16-bit minus float32) on the same
  splits: its mean with the corrected resampled t interval (Nadeau & Bengio,
  Machine Learning 52, 2003;
  :func:`~ultrasound_transfer.evaluation.statistics.corrected_resampled_t`),
  the test the study uses to compare classifiers;
* beside it, **the float32 run's own headline interval** (pooled ROC-AUC,
  bootstrap over groups): the precision the study claims.  The effect "sits
  inside the intervals" when, for every row, the whole corrected interval of
  the difference lies within a quarter of that width on either side of 0
  (an equivalence margin, as in two one-sided tests: noisy splits do not
  pass by failing to reject);
* the **largest change of a test probability** between the two runs.

The experiment is removed afterwards (``dvc exp remove``).  Writes
``benchmarks/results/precision_effect.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from benchmarks.results import RESULTS_DIR, markdown_table, write_results
from ultrasound_transfer.choices import CLASSIFIERS
from ultrasound_transfer.evaluation.statistics import corrected_resampled_t
from ultrasound_transfer.outputs import cv_results, prepared
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.settings import Settings

# What it runs in other processes, whose code it times too (benchmarks.results.timed_files).
RUNS = ("stages.finetune", "stages.evaluate")


def read_at(ref: str, path: str) -> str:
    """A results file as the experiment ``ref`` left it: from its commit, or DVC's cache for a cached output."""
    import dvc.api

    return dvc.api.read(path, repo=".", rev=ref)


def check_workspace_is_the_float32_study() -> Settings:
    """The workspace's settings, once its results are known to be the float32 run of today's code."""
    settings = load_settings()
    if settings.finetune.precision != "float32":
        raise SystemExit("params.yaml: finetune.precision must be float32, the run compared against; "
                         "set it back and run 'dvc repro'.")
    status = subprocess.run(["dvc", "status", "--quiet"], capture_output=True, text=True)
    if status.returncode != 0:
        raise SystemExit("the pipeline is not up to date ('dvc status'): run 'dvc repro' first, so that the "
                         "workspace's results are the float32 run of today's code.")
    return settings


def run_experiment(name: str, precision: str) -> tuple[str, float]:
    """Run the pipeline as a temporary experiment in ``precision``; its git ref and wall seconds."""
    started = time.perf_counter()
    subprocess.run(["dvc", "exp", "run", "--temp", "--name", name, "-S", f"finetune.precision={precision}"],
                   check=True)
    seconds = time.perf_counter() - started
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], capture_output=True,
                          text=True, check=True).stdout.split()
    found = [ref for ref in refs if ref.endswith(f"/{name}")]
    if not found:
        raise SystemExit(f"dvc exp run finished but no experiment ref ends in /{name} (git for-each-ref refs/exps); "
                         "see 'dvc exp list'.")
    return found[0], seconds


def paired_rows(read: Callable[[str, str], str], dataset: str, model_name: str, *,
                class_names: list[str]) -> list[dict]:
    """Per classifier: the paired per-split AUC difference, the float32 interval, the largest probability change.

    ``read(run, path)``: the text of a results file of ``run`` (``float32`` or ``16-bit``), at its path in
    the repository (:mod:`ultrasound_transfer.outputs.cv_results`).
    """
    runs = ("float32", "16-bit")

    def table(run: str, path: Path) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(read(run, str(path))))

    folds = {run: table(run, cv_results.folds_path(dataset, model_name)) for run in runs}
    predictions = {run: table(run, cv_results.predictions_path(dataset, model_name)) for run in runs}
    headline = json.loads(read("float32", str(cv_results.metrics_path(dataset, model_name))))["image"]
    rows = []
    for classifier in CLASSIFIERS:
        a, b = (folds[run][folds[run]["classifier"] == classifier].set_index(["repeat", "fold", "split"]).sort_index()
                for run in runs)
        difference = (b["roc_auc"] - a["roc_auc"]).to_numpy()
        test = corrected_resampled_t(difference, n_train=float(a["n_train"].mean()), n_test=float(a["n_test"].mean()))
        columns = [cv_results.prob_column(classifier, name) for name in class_names]
        p, q = (predictions[run].set_index(["id", "repeat"]).sort_index()[columns] for run in runs)
        width = headline[classifier]["roc_auc_ci_high"] - headline[classifier]["roc_auc_ci_low"]
        rows.append({"dataset": dataset, "model": model_name, "classifier": classifier, "splits": len(difference),
                     "auc_float32": float(a["roc_auc"].mean()), "auc_16bit": float(b["roc_auc"].mean()),
                     "mean_difference": test["mean_diff"], "ci_low": test["ci_low"], "ci_high": test["ci_high"],
                     "float32_interval_width": width,
                     "largest_probability_change": float(np.abs(p.to_numpy() - q.to_numpy()).max())})
    return rows


def inside_the_intervals(row: dict) -> bool:
    """Equivalence, not a failure to reject: the whole corrected interval of the difference within a quarter of
    the float32 run's own interval width on either side of 0 (a NaN bound is not inside)."""
    margin = row["float32_interval_width"] / 4
    return bool(-margin < row["ci_low"] and row["ci_high"] < margin)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="mixed_bfloat16", choices=["mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--results-dir", default=RESULTS_DIR)
    args = parser.parse_args(argv)
    settings = check_workspace_is_the_float32_study()
    name = f"precision-effect-{int(time.time())}"
    ref, seconds = run_experiment(name, args.precision)
    def read(run: str, path: str) -> str:
        return open(path).read() if run == "float32" else read_at(ref, path)

    try:
        rows = [row for dataset in settings.datasets for model_name in settings.models
                for row in paired_rows(read, dataset, model_name,
                                       class_names=prepared.class_names_of(prepared.load_manifest(dataset)))]
    finally:
        subprocess.run(["dvc", "exp", "remove", name], check=False)
    for row in rows:
        row["inside"] = inside_the_intervals(row)
    table = markdown_table(
        [[r["dataset"], r["model"], r["classifier"], f"{r['auc_float32']:.3f}", f"{r['auc_16bit']:.3f}",
          f"{r['mean_difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
          f"{r['float32_interval_width']:.3f}", f"{r['largest_probability_change']:.3f}",
          "yes" if r["inside"] else "no"] for r in rows],
        ["dataset", "network", "classifier", "mean split AUC, float32", f"mean split AUC, {args.precision}",
         "difference [95% corrected CI]", "float32 AUC interval width", "largest probability change",
         "inside the intervals"])
    verdict = all(r["inside"] for r in rows)
    note = (f"The demo (params.yaml as committed) run again with finetune.precision={args.precision} "
            f"({seconds:.0f} s as a temporary experiment), against the workspace's float32 run; per-split "
            f"differences on the same {rows[0]['splits']} splits. "
            + ("Every difference sits inside the intervals." if verdict else
               "Not every difference sits inside the intervals."))
    write_results("precision_effect", {"precision": args.precision, "experiment_s": seconds, "rows": rows,
                                       "inside_the_intervals": verdict},
                  {"table": table}, note=note, directory=args.results_dir, benchmark="precision_effect")
    print(table)


if __name__ == "__main__":
    main()
