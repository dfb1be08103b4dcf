"""Stage ``report``: the paper's table from every dataset's and model's metrics.

Usage: ``python -m stages.report``.  Reads params ``datasets``, ``models`` and
``ft_fraction``.

Outputs ``metrics/summary.json`` (dataset -> model -> classifier -> metric
mean and std) and ``metrics/summary.md``: one table per metric in the paper's
layout, models as rows and dataset x classifier as columns, cells
``mean ± std`` over the folds.
"""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from stages.common import PipelineError, load_params, log, read_json, require, run_stage, write_atomic, write_json
from stages.data import FOLDS_DIR, METRICS_DIR

SUMMARY_DIR = Path("metrics")
CLASSIFIERS = {"dense": "dense head", "svm": "SVM"}
TABLE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def collect(datasets: list[str], models: list[str]) -> dict:
    """Nested dict dataset -> model -> classifier -> metrics, from ``metrics/cv``."""
    summary: dict = {}
    for dataset in datasets:
        for model in models:
            metrics = read_json(METRICS_DIR / dataset / f"{model}.json")
            summary.setdefault(dataset, {})[model] = {c: metrics[c] for c in CLASSIFIERS}
    return summary


def metric_table(summary: dict, metric: str, models: list[str]) -> str:
    """One markdown table: models as rows, dataset x classifier as columns."""
    headers = ["model"] + [f"{d} {label}" for d in summary for label in CLASSIFIERS.values()]
    rows = []
    for model in models:
        row = [model]
        for dataset in summary:
            for classifier in CLASSIFIERS:
                m = summary[dataset][model][classifier]
                row.append(f"{m[metric]:.3f} ± {m[metric + '_std']:.3f}")
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github")


def render_markdown(summary: dict, models: list[str], ft_fraction: float, n_folds: dict[str, int]) -> str:
    """The whole ``summary.md``."""
    folds = ", ".join(f"{d}: {n}" for d, n in n_folds.items())
    parts = [
        "# Cross-validated results",
        "",
        f"ft_fraction = {ft_fraction}; mean ± sample std over the test folds ({folds}).",
    ]
    for metric in TABLE_METRICS:
        parts += ["", f"## {metric}", "", metric_table(summary, metric, models)]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> None:
    if argv:
        raise PipelineError(f"usage: python -m stages.report (got arguments {argv}).")
    params = load_params()
    datasets, models = require(params, "datasets"), require(params, "models")
    summary = collect(datasets, models)
    n_folds = {d: len(read_json(FOLDS_DIR / f"{d}.json")["folds"]) for d in datasets}
    markdown = render_markdown(summary, models, require(params, "ft_fraction"), n_folds)
    write_json(SUMMARY_DIR / "summary.json", summary)
    write_atomic(SUMMARY_DIR / "summary.md", lambda tmp: tmp.write_text(markdown))
    print(markdown, flush=True)
    log("report", f"wrote {SUMMARY_DIR / 'summary.md'} and summary.json")


if __name__ == "__main__":
    run_stage(main)
