"""Which fine-tuning strategy is best? Compare the experiments of an ``ft_fraction`` sweep.

Usage::

    ultrasound-transfer protocol paper --strategies 0,0.15,0.5,1    # or: dvc exp run --queue -S ft_fraction=...
    ultrasound-transfer compare                      # accuracy; best strategy by the SVM (default)
    ultrasound-transfer compare --classifier dense --metric f1

Reads ``dvc exp show --json``, keeps the experiments that differ from each other
only in ``ft_fraction`` (the largest such set), and for every dataset prints
and writes the paper's table, network x strategy x classifier (``mean ± std``
over folds), the best
``ft_fraction`` per model with its margin over the runner-up and a 95 %
interval for that margin (fold-paired, corrected resampled t-test; per-fold
scores are read from each experiment's commit), and a plot of the metric
against ``ft_fraction`` per model.  Outputs go to ``metrics/compare/``
(``<dataset>.md`` and ``<metric>_vs_ft_fraction.html``, which renders offline).
The selection test is Friedman's across all strategies, then the best against
each other one with the corrected resampled t-test (Nadeau & Bengio 2003) and
Holm's step-down adjustment (:mod:`ultrasound_transfer.evaluation.statistics`).
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.evaluation.scoring import BINARY_METRICS, MULTICLASS_METRICS
from ultrasound_transfer.evaluation.statistics import best_against_rest, format_p, mean_fold_sizes
from ultrasound_transfer.paths import FOLDS_DIR, METRICS_DIR
from ultrasound_transfer.study.experiments import DVC

OUT_DIR = Path("metrics/compare")
OFFLINE_TEMPLATE = Path(".dvc/plots/offline.html")
CLASSIFIERS = ("svm", "dense")
METRICS = tuple(sorted({*BINARY_METRICS, *MULTICLASS_METRICS}))


def experiment_records(show: list[dict]) -> list[dict]:
    """Flatten ``dvc exp show --json`` into {name, rev, params, metrics}, one per commit."""
    records, seen = [], set()

    def add(entry: dict, name: str | None) -> None:
        data = entry.get("data") or {}
        rev = data.get("rev") or entry.get("rev")
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
        metrics = {path: m.get("data") for path, m in (data.get("metrics") or {}).items() if m.get("data")}
        if rev in seen or rev == "workspace" or not params or not metrics:
            return
        seen.add(rev)
        records.append({"name": name or rev[:7], "rev": rev, "params": params, "metrics": metrics})

    for baseline in show:
        add(baseline, baseline.get("name"))
        for experiment in baseline.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                add(revision, revision.get("name"))
    return records


def sweep(records: list[dict]) -> list[dict]:
    """The largest set of experiments that differ only in ``ft_fraction``, one per value."""
    def rest(record: dict) -> str:
        return json.dumps({k: v for k, v in record["params"].items() if k != "ft_fraction"}, sort_keys=True)

    if not records:
        raise PipelineError("dvc exp show lists no experiment with metrics; run the sweep first (docs/experiments.md).")
    groups: dict[str, dict[float, dict]] = {}
    for record in records:                         # newest first in dvc's listing: keep the first per value
        groups.setdefault(rest(record), {}).setdefault(float(record["params"]["ft_fraction"]), record)
    chosen = max(groups.values(), key=len)
    if len(chosen) < 2:
        raise PipelineError("fewer than two ft_fraction values among experiments with equal other params; "
                            "run e.g. dvc exp run --queue -S ft_fraction=0,0.15,0.5,1 && dvc queue start.")
    return [chosen[f] for f in sorted(chosen)]


def git_reader(repo: Path = Path(".")) -> Callable[[str, str], str]:
    """A function reading a file as committed in a revision (experiments are commits)."""
    def read(rev: str, path: str) -> str:
        result = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True)
        if result.returncode != 0:
            raise PipelineError(f"cannot read {path} at {rev[:7]}: {result.stderr.strip()}")
        return result.stdout
    return read


def paper_table(runs: list[dict], dataset: str, models: list[str], metric: str) -> pd.DataFrame:
    """The paper's table: rows network x ft_fraction, one column per classifier, cells 'mean ± std'."""
    rows = []
    for model in models:
        for run in runs:
            scores = run["metrics"].get(f"{METRICS_DIR}/{dataset}/{model}.json", {})
            row = {"network": model, "ft_fraction": run["params"]["ft_fraction"]}
            for classifier, label in (("dense", "dense head"), ("svm", "SVM")):
                m = scores.get(classifier, {})
                row[label] = f"{m[metric]:.3f} ± {m[metric + '_std']:.3f}" if metric in m else "—"
            rows.append(row)
    return pd.DataFrame(rows)


def best_strategies(runs: list[dict], dataset: str, models: list[str], *, classifier: str, metric: str,
                    read: Callable[[str, str], str]) -> pd.DataFrame:
    """Per model: the best ft_fraction, tested as a selection among all strategies.

    Friedman test across the strategies (folds as blocks), then the best
    against every other strategy (corrected resampled t-test, Holm-adjusted);
    the row names the runner-up with its margin and interval, the largest
    Holm-adjusted p over all comparisons, and whether the data support the
    choice (see :func:`ultrasound_transfer.evaluation.statistics.best_against_rest`).
    """
    rows = []
    for model in models:
        path = f"{METRICS_DIR}/{dataset}/{model}.json"
        scored = [r for r in runs if classifier in r["metrics"].get(path, {})]
        if len(scored) < 2:
            continue

        def fold_scores(run: dict, model: str = model) -> np.ndarray:
            table = pd.read_csv(io.StringIO(read(run["rev"], f"{METRICS_DIR}/{dataset}/{model}.folds.csv")))
            return table[table["classifier"] == classifier].sort_values("fold")[metric].to_numpy()

        n_train, n_test = mean_fold_sizes(json.loads(read(scored[0]["rev"], f"{FOLDS_DIR}/{dataset}.json")))
        scores = np.stack([fold_scores(r) for r in scored], axis=1)
        result = best_against_rest(scores, [r["params"]["ft_fraction"] for r in scored], n_train, n_test)
        runner_up = result["comparisons"][0]
        rows.append({"model": model, "best ft_fraction": result["best"],
                     metric: round(float(scores.mean(axis=0).max()), 3),
                     "runner-up": runner_up["against"], "margin": round(runner_up["mean_diff"], 3),
                     "95 % CI": f"[{runner_up['ci_low']:+.3f}, {runner_up['ci_high']:+.3f}]",
                     "Friedman p": format_p(result["friedman_p"]),
                     "max Holm p": format_p(float(np.max([c["p_value_holm"] for c in result["comparisons"]]))),
                     "supported": "yes" if result["supported"] else "no"})
    return pd.DataFrame(rows)


def plot_html(points: pd.DataFrame, metric: str) -> str:
    """Offline HTML page: ``metric`` against ft_fraction, one line per model, one panel per dataset."""
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": points.to_dict("records")},
        "facet": {"column": {"field": "dataset"}},
        "spec": {
            "width": 320, "height": 240,
            "layer": [
                {"mark": {"type": "line", "point": True},
                 "encoding": {"x": {"field": "ft_fraction", "type": "quantitative"},
                              "y": {"field": metric, "type": "quantitative", "scale": {"zero": False}},
                              "color": {"field": "model", "type": "nominal"}}},
                {"mark": "errorbar",
                 "encoding": {"x": {"field": "ft_fraction", "type": "quantitative"},
                              "y": {"field": "low", "type": "quantitative", "title": metric},
                              "y2": {"field": "high"}, "color": {"field": "model", "type": "nominal"}}},
            ],
        },
    }
    div = f'<div id="compare"></div><script>vegaEmbed("#compare", {json.dumps(spec)});</script>'
    page = OFFLINE_TEMPLATE.read_text() if OFFLINE_TEMPLATE.exists() else "<html><body>{plot_divs}</body></html>"
    return page.replace("{refresh_tag}", "").replace("{plot_divs}", div)


def dvc_exp_show() -> list[dict]:
    """``dvc exp show --json`` of the repository in the working directory."""
    result = subprocess.run([*DVC, "exp", "show", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"dvc exp show failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def run_comparison(*, classifier: str = "svm", metric: str = "accuracy", exp_json: Path | None = None) -> None:
    """Print and write the paper's table and the best strategy per model for every dataset, and the plot."""
    show = json.loads(Path(exp_json).read_text()) if exp_json else dvc_exp_show()
    runs = sweep(experiment_records(show))
    params = runs[0]["params"]
    read = git_reader()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    points = []
    for dataset in params["datasets"]:
        table = paper_table(runs, dataset, params["models"], metric)
        best = best_strategies(runs, dataset, params["models"], classifier=classifier, metric=metric, read=read)
        listing = ", ".join(f"{r['name']} ({r['params']['ft_fraction']})" for r in runs)
        text = (f"# {dataset}: {metric} by network, ft_fraction and classifier\n\n"
                f"Experiments: {listing}\n\n"
                + tabulate(table, headers="keys", tablefmt="github", showindex=False)
                + f"\n\n## Best ft_fraction per model ({classifier})\n\nMargin over the runner-up with its 95 % "
                "interval (fold-paired corrected resampled t-test). The choice accounts for having picked the best: "
                "a Friedman test across all strategies, and the best against every other one with Holm's "
                "adjustment; 'supported' when all are below 0.05.\n\n"
                + tabulate(best, headers="keys", tablefmt="github", showindex=False) + "\n")
        print(text, flush=True)
        (OUT_DIR / f"{dataset}.md").write_text(text)
        for run in runs:
            for model in params["models"]:
                m = run["metrics"].get(f"{METRICS_DIR}/{dataset}/{model}.json", {}).get(classifier, {})
                if metric in m:
                    mean, std = m[metric], m[metric + "_std"]
                    points.append({"dataset": dataset, "model": model, "ft_fraction": run["params"]["ft_fraction"],
                                   metric: mean, "low": mean - std, "high": mean + std})
    plot = OUT_DIR / f"{metric}_vs_ft_fraction.html"
    plot.write_text(plot_html(pd.DataFrame(points), metric))
    print(f"[compare] wrote {OUT_DIR}/<dataset>.md and {plot}", flush=True)
