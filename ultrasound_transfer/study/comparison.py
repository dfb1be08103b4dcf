"""Which fine-tuning strategy is best? Compare the experiments of an ``ft_fraction`` sweep.

Usage::

    ultrasound-transfer protocol paper --strategies 0,0.15,0.5,1    # or: dvc exp run --queue -S ft_fraction=...
    ultrasound-transfer compare                      # ROC-AUC; best strategy by the SVM (default)
    ultrasound-transfer compare --classifier dense --metric sensitivity

Reads ``dvc exp show --json`` and never drops an experiment silently:

* experiments that differ only in ``ft_fraction``, ``seed`` or
  ``cv.repeats`` are one comparison: those differing in ``seed`` or
  ``cv.repeats`` are pooled as repeats of the same strategy, each split
  of each (seed, repeat) a block of the paired tests;
* an experiment that repeats another's params exactly is left out (the newest
  is kept), and experiments that differ in anything else form other
  comparisons; the largest is compared, and every one left out is listed in
  the output with the reason.

For every dataset it prints and writes the paper's table, network x
strategy x classifier (``mean ± std`` over every split of every pooled
experiment, per-split scores read from each experiment's commit), the best
``ft_fraction`` per model with its margin over the runner-up and a 95 %
interval for that margin, and a plot of the metric against ``ft_fraction``
per model.  Outputs go to ``metrics/compare/`` (``<dataset>.md`` and
``<metric>_vs_ft_fraction.html``, which renders offline).  The selection
test is Iman and Davenport's across all strategies, then the best against
each other one with the corrected repeated k-fold t-test and Holm's
step-down adjustment (:mod:`ultrasound_transfer.evaluation.statistics`).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.evaluation.classifiers import ARGMAX_METRICS
from ultrasound_transfer.evaluation.scoring import BINARY_METRICS, MULTICLASS_METRICS
from ultrasound_transfer.evaluation.statistics import (
    best_against_rest,
    compare_paired,
    fold_sizes,
    format_p,
    holm_adjusted,
    supported_selections,
)
from ultrasound_transfer.outputs import cv_results
from ultrasound_transfer.study.experiments import DVC

OUT_DIR = Path("metrics/compare")
OFFLINE_TEMPLATE = Path(".dvc/plots/offline.html")
# Per-split metrics of evaluate's folds.csv that compare can test.
METRICS = tuple(sorted({*BINARY_METRICS, *MULTICLASS_METRICS, "brier", *(f"argmax_{m}" for m in ARGMAX_METRICS)}))
# Per-split metrics where a lower value is better: the best strategy is the lowest.
LOWER_IS_BETTER = ("brier", "ece")


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


# Params whose experiments are pooled as repeats of one strategy.
POOLED_PARAMS = ("seed", "cv.repeats")


def flat_params(params: dict, prefix: str = "") -> dict:
    """``{"cv": {"repeats": 3}}`` as ``{"cv.repeats": 3}``."""
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def select_experiments(records: list[dict]) -> tuple[list[dict], list[str]]:
    """The experiments compared (differing only in ft_fraction, seed or cv.repeats), and why each other was not.

    Returns the compared records, sorted by ft_fraction then seed, and one
    line per experiment left out.
    """
    if not records:
        raise PipelineError("dvc exp show lists no experiment with metrics; run the sweep first (docs/experiments.md).")
    varying = ("ft_fraction", *POOLED_PARAMS)
    comparisons: dict[str, list[dict]] = {}
    left_out = []
    for record in records:                     # newest first in dvc's listing
        flat = flat_params(record["params"])
        rest = json.dumps({k: v for k, v in flat.items() if k not in varying}, sort_keys=True, default=str)
        same = [r for r in comparisons.get(rest, []) if flat_params(r["params"]) == flat]
        if same:
            left_out.append(f"{record['name']}: the same params as {same[0]['name']}, which is newer")
            continue
        comparisons.setdefault(rest, []).append(record)

    def size(runs: list[dict]) -> tuple[int, int]:
        return len({float(r["params"]["ft_fraction"]) for r in runs}), len(runs)

    chosen = max(comparisons.values(), key=size)
    if size(chosen)[0] < 2:
        raise PipelineError("fewer than two ft_fraction values among experiments with equal other params; "
                            "run e.g. dvc exp run --queue -S ft_fraction=0,0.15,0.5,1 && dvc queue start.")
    reference = flat_params(chosen[0]["params"])
    for runs in comparisons.values():
        if runs is chosen:
            continue
        for record in runs:
            flat = flat_params(record["params"])
            differs = sorted(k for k in reference.keys() | flat.keys()
                             if k not in varying and reference.get(k) != flat.get(k))
            left_out.append(f"{record['name']}: differs from the compared experiments in {', '.join(differs)}")
    # Repeat r of a seed is the same split whatever cv.repeats says, so of two runs of one strategy and seed
    # only the one with more repeats is kept: the other's splits are a subset of it, not new blocks.
    widest: dict[tuple, dict] = {}
    for record in chosen:
        key = (float(record["params"]["ft_fraction"]), record["params"].get("seed", 0))
        kept = widest.get(key)
        if kept is None or repeats_of(record) > repeats_of(kept):
            widest[key], record = record, kept
        if record is not None:
            kept = widest[key]
            left_out.append(f"{record['name']}: its splits (cv.repeats = {repeats_of(record)}) are among those of "
                            f"{kept['name']} (cv.repeats = {repeats_of(kept)}), same ft_fraction and seed")
    return [widest[key] for key in sorted(widest)], left_out


def repeats_of(record: dict) -> int:
    return int((record["params"].get("cv") or {}).get("repeats", 1))


def sweep(records: list[dict]) -> list[dict]:
    """The experiments compared (see :func:`select_experiments`)."""
    return select_experiments(records)[0]


def git_reader(repo: Path = Path(".")) -> Callable[[str, str], str]:
    """A function reading a file as committed in a revision (experiments are commits)."""
    def read(rev: str, path: str) -> str:
        result = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True)
        if result.returncode != 0:
            raise PipelineError(f"cannot read {path} at {rev[:7]}: {result.stderr.strip()}")
        return result.stdout
    return read


def split_scores(runs: list[dict], dataset: str, model: str, *, metric: str,
                 read: Callable[[str, str], str]) -> pd.DataFrame:
    """Per-split scores of every run: ft_fraction, seed, repeat, fold, classifier, n_train, n_test and ``metric``."""
    tables = []
    for run in runs:
        try:
            text = read(run["rev"], cv_results.folds_path(dataset, model).as_posix())
        except PipelineError:
            continue
        table = pd.read_csv(io.StringIO(text))
        if metric not in table:
            continue
        table = table.assign(ft_fraction=float(run["params"]["ft_fraction"]), seed=run["params"].get("seed", 0))
        if "repeat" not in table:
            table["repeat"] = 1
        tables.append(table[["ft_fraction", "seed", "repeat", "fold", "classifier", "n_train", "n_test", metric]])
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def paper_table(scores: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """The paper's table: rows network x ft_fraction, one column per classifier, 'mean ± std' over pooled splits."""
    rows = []
    for model, table in scores.items():
        if table.empty:
            continue
        for ft_fraction, part in table.groupby("ft_fraction"):
            splits = int(len(part) // part["classifier"].nunique())
            row = {"network": model, "ft_fraction": ft_fraction, "splits": splits}
            for classifier, label in (("dense", "dense head"), ("svm", "SVM")):
                values = part.loc[part["classifier"] == classifier, metric].dropna()
                row[label] = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else "—"
            rows.append(row)
    return pd.DataFrame(rows)


def strategy_selections(scores: dict[str, pd.DataFrame], *, classifier: str, metric: str) -> list[dict]:
    """Per model: the best ft_fraction and its advantage over every other strategy
    (:func:`ultrasound_transfer.evaluation.statistics.best_against_rest`), with the blocks it rests on.

    Blocks are the splits of each (seed, repeat); a block missing for some
    strategy is left out of the tests and counted.
    """
    selections = []
    for model, table in scores.items():
        if table.empty:
            continue
        mine = table[table["classifier"] == classifier]
        blocks = mine.pivot_table(index=["seed", "repeat", "fold"], columns="ft_fraction", values=metric)
        complete = blocks.dropna()
        if complete.shape[1] < 2 or len(complete) < 2:
            continue
        n_train, n_test = fold_sizes(table)
        result = best_against_rest(complete.to_numpy(), list(complete.columns), n_train, n_test,
                                   higher_is_better=metric not in LOWER_IS_BETTER)
        means = complete.to_numpy().mean(axis=0)
        selections.append({**result, "model": model, "value": float(means[list(complete.columns).index(
            result["best"])]), "blocks": len(complete), "blocks_left_out": len(blocks) - len(complete)})
    return selections


def selection_table(selections: list[dict], metric: str) -> pd.DataFrame:
    """One row per model: the best ft_fraction, its margin over the runner-up, the family-adjusted verdict."""
    rows = []
    for s in selections:
        runner_up = s["comparisons"][0]
        rows.append({"model": s["model"], "best ft_fraction": s["best"], metric: round(s["value"], 3),
                     "runner-up": runner_up["against"], "better by": round(runner_up["mean_diff"], 3),
                     "95 % CI": f"[{runner_up['ci_low']:+.3f}, {runner_up['ci_high']:+.3f}]",
                     "blocks": s["blocks"], "blocks left out": s["blocks_left_out"],
                     "max Holm p (family)": format_p(float(np.max([c["p_value_holm"] for c in s["comparisons"]]))),
                     "Iman-Davenport p (descriptive)": format_p(s["iman_davenport_p"]),
                     "supported": "yes" if s["supported"] else "no"})
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


def read_exp_json(path: Path) -> list[dict]:
    """A saved ``dvc exp show --json``, refused clearly when it is not one."""
    if not path.is_file():
        raise PipelineError(f"--exp-json {path}: no such file; save one with dvc exp show --json > {path}.")
    try:
        show = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PipelineError(f"--exp-json {path}: not valid JSON ({error}); save it again with "
                            f"dvc exp show --json > {path}.") from None
    if not isinstance(show, list) or not all(isinstance(entry, dict) for entry in show):
        raise PipelineError(f"--exp-json {path}: not the output of dvc exp show --json (a list of revisions); "
                            f"save it again with dvc exp show --json > {path}.")
    return show


def weights_line(params: dict) -> str:
    """What the compared networks started from (``weights``: one value, or one per network), for the header."""
    weights = params.get("weights", "none")
    if isinstance(weights, dict):
        return ", ".join(f"{model} `{weights.get(model, '?')}`" for model in params.get("models", weights))
    return f"`{weights}` for every network"


def run_comparison(*, classifier: str = "svm", metric: str = "roc_auc", exp_json: Path | None = None,
                   read: Callable[[str, str], str] | None = None, prefix: str | None = None) -> None:
    """Print and write the paper's table and the best strategy per model for every dataset, and the plot
    (``prefix``: compare only the experiments whose names start with it, such as one weights arm's
    ``paper-radimagenet-``).

    The selections of every network x dataset form one family: their tests are Holm-adjusted together, so
    that a "supported" among many is not one of many lucky draws.
    """
    show = read_exp_json(Path(exp_json)) if exp_json else dvc_exp_show()
    records = experiment_records(show)
    if prefix:
        records = [r for r in records if (r["name"] or "").startswith(prefix)]
        if not records:
            raise PipelineError(f"--prefix {prefix!r}: no experiment's name starts with it (dvc exp show lists them).")
    runs, left_out = select_experiments(records)
    params = runs[0]["params"]
    read = read or git_reader()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    listing = ", ".join(f"{r['name']} (ft_fraction {r['params']['ft_fraction']}, seed {r['params'].get('seed')})"
                        for r in runs)
    omitted = "".join(f"\n- {line}" for line in left_out) or " none"
    scores, selections = {}, {}
    for dataset in params["datasets"]:
        scores[dataset] = {model: split_scores(runs, dataset, model, metric=metric, read=read)
                           for model in params["models"]}
        if all(table.empty for table in scores[dataset].values()):
            raise PipelineError(f"no experiment's metrics/cv/{dataset}/<model>.folds.csv has the metric '{metric}'; "
                                "two-class datasets have roc_auc, sensitivity, specificity, ppv, npv, f1, brier and "
                                "argmax_*, more classes the macro averages (docs/results.md#metric-names).")
        selections[dataset] = strategy_selections(scores[dataset], classifier=classifier, metric=metric)
    family = supported_selections([s for chosen in selections.values() for s in chosen])
    direction = "lowest" if metric in LOWER_IS_BETTER else "highest"
    points = []
    for dataset, dataset_scores in scores.items():
        table = paper_table(dataset_scores, metric)
        best = selection_table(selections[dataset], metric)
        text = (f"# {dataset}: {metric} by network, ft_fraction and classifier\n\n"
                f"Experiments compared (pooled over seeds and repeats): {listing}\n\n"
                f"Initial weights: {weights_line(params)}\n\nLeft out:{omitted}\n\n"
                + tabulate(table, headers="keys", tablefmt="github", showindex=False)
                + f"\n\n## Best ft_fraction per model ({classifier})\n\nThe best is the {direction} mean {metric}; "
                "'better by' is its advantage over the runner-up with its 95 % interval (split-paired corrected "
                "repeated k-fold t-test). The choice accounts for having picked the best: it is tested against "
                "every other strategy, and the p-values are Holm-adjusted over the family of every network x "
                f"dataset compared ({sum(len(s['comparisons']) for s in family)} tests); 'supported' when all of a "
                "model's stay below 0.05. The Iman-Davenport p takes folds as independent blocks, which they are "
                "not (they share training images): descriptive only.\n\n"
                + tabulate(best, headers="keys", tablefmt="github", showindex=False) + "\n")
        print(text, flush=True)
        (OUT_DIR / f"{dataset}.md").write_text(text)
        for model, model_scores in dataset_scores.items():
            if model_scores.empty:
                continue
            mine = model_scores[model_scores["classifier"] == classifier]
            for ft_fraction, part in mine.groupby("ft_fraction"):
                mean, std = float(part[metric].mean()), float(part[metric].std(ddof=1))
                points.append({"dataset": dataset, "model": model, "ft_fraction": ft_fraction,
                               metric: mean, "low": mean - std, "high": mean + std})
    plot = OUT_DIR / f"{metric}_vs_ft_fraction.html"
    plot.write_text(plot_html(pd.DataFrame(points), metric))
    print(f"[compare] wrote {OUT_DIR}/<dataset>.md and {plot}", flush=True)


# What two weights arms may differ in: the initial weights and which networks run (an arm runs only the networks it
# has weights for). Anything else would make the difference not the weights'.
ARM_DIFFERENCES = ("weights", "models")


def arm_runs(records: list[dict], arm: str) -> list[dict]:
    """The experiments of one arm: named ``<arm>-ft<fraction>`` (``paper-ft0.15``, ``paper-radimagenet-ft0.15``)."""
    pattern = re.compile(rf"^{re.escape(arm)}-ft[0-9.]+$")
    runs = [r for r in records if pattern.match(r["name"] or "")]
    if not runs:
        raise PipelineError(f"--arms: no experiment is named {arm}-ft<fraction> (dvc exp show lists them); run "
                            "ultrasound-transfer protocol ... --weights-arm first.")
    return runs


def check_like_for_like(base: list[dict], other: list[dict]) -> None:
    """Refuse arms that differ in more than their weights and networks, naming the parameters."""
    def rest(run: dict) -> dict:
        return {k: v for k, v in flat_params(run["params"]).items()
                if k != "ft_fraction" and k.split(".")[0] not in ARM_DIFFERENCES}

    reference = rest(base[0])
    for run in [*base, *other]:
        differs = sorted(k for k in reference.keys() | rest(run).keys() if reference.get(k) != rest(run).get(k))
        if differs:
            raise PipelineError(f"--arms: {run['name']} differs from {base[0]['name']} in {', '.join(differs)}, not "
                                "only in its weights: the difference would not be the weights'. Run both arms with "
                                "the same parameters (ultrasound-transfer protocol ... --weights-arm).")


def arm_weights(run: dict, model: str) -> str:
    weights = run["params"].get("weights", "none")
    return str(weights.get(model, "?") if isinstance(weights, dict) else weights)


def arm_comparisons(base: list[dict], other: list[dict], *, classifier: str, metric: str,
                    read: Callable[[str, str], str]) -> pd.DataFrame:
    """Per dataset x network x ft_fraction both arms ran: ``other`` minus ``base`` on ``metric`` for
    ``classifier``, paired by split (the same folds: same data, seed and cv), by the corrected repeated k-fold
    t-test, Holm-adjusted over every row (one family)."""
    rows = []
    by_fraction = {float(r["params"]["ft_fraction"]): r for r in base}
    for run in other:
        ft = float(run["params"]["ft_fraction"])
        if ft not in by_fraction:
            continue
        reference = by_fraction[ft]
        for dataset in run["params"]["datasets"]:
            for model in run["params"]["models"]:
                if model not in reference["params"]["models"]:
                    continue
                tables = [split_scores([r], dataset, model, metric=metric, read=read) for r in (reference, run)]
                if any(t.empty for t in tables):
                    continue
                mine = [t[t["classifier"] == classifier].set_index(["seed", "repeat", "fold"])[metric]
                        for t in tables]
                paired = pd.concat(mine, axis=1, keys=["base", "other"]).dropna()
                if len(paired) < 2:
                    continue
                n_train, n_test = fold_sizes(pd.concat(tables))
                result = compare_paired(paired["other"].to_numpy(), paired["base"].to_numpy(), n_train, n_test)
                rows.append({"dataset": dataset, "network": model, "ft_fraction": ft,
                             "base weights": arm_weights(reference, model), "other weights": arm_weights(run, model),
                             "base": round(float(paired["base"].mean()), 3),
                             "other": round(float(paired["other"].mean()), 3),
                             "other − base": round(result["mean_diff"], 3),
                             "95 % CI": f"[{result['ci_low']:+.3f}, {result['ci_high']:+.3f}]",
                             "detectable (80 % power)": round(result["detectable_80"], 3),
                             "splits": len(paired), "p": result["p_value_t"]})
    if not rows:
        raise PipelineError(f"--arms: no dataset x network x ft_fraction has per-split {metric} in both arms.")
    table = pd.DataFrame(rows)
    table["Holm p (family)"] = [format_p(p) for p in holm_adjusted(table["p"].tolist())]
    table["p"] = [format_p(p) for p in table["p"]]
    return table


def run_arm_comparison(arms: tuple[str, str], *, classifier: str = "svm", metric: str = "roc_auc",
                       exp_json: Path | None = None, read: Callable[[str, str], str] | None = None) -> Path:
    """Print and write ``metrics/compare/arms_<base>_vs_<other>.md``: the second weights arm against the first,
    network by network and strategy by strategy (:func:`arm_comparisons`)."""
    show = read_exp_json(Path(exp_json)) if exp_json else dvc_exp_show()
    records = experiment_records(show)
    base, other = (arm_runs(records, arm) for arm in arms)
    check_like_for_like(base, other)
    table = arm_comparisons(base, other, classifier=classifier, metric=metric, read=read or git_reader())
    text = (f"# {arms[1]} against {arms[0]}: {metric} of the {classifier} classifier\n\n"
            f"Experiments: {', '.join(r['name'] for r in [*base, *other])}. The arms differ only in their initial "
            "weights (and which networks run); each row pairs the same splits of the same data, so the difference "
            "is the weights'. Interval and p: the corrected repeated k-fold t-test (Nadeau and Bengio 2003); "
            f"Holm over all {len(table)} rows as one family. 'detectable' is the difference this design finds with "
            "80 % power at level 0.05: a smaller true difference is likely missed.\n\n"
            + tabulate(table, headers="keys", tablefmt="github", showindex=False) + "\n")
    print(text, flush=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"arms_{arms[0]}_vs_{arms[1]}.md"
    path.write_text(text)
    return path
