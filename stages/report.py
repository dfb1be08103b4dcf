"""Stage ``report``: the paper's table, and whether the SVM really beats the dense head.

Usage: ``python -m stages.report``.  Reads params ``datasets``, ``models`` and
``ft_fraction``.

Outputs:

* ``metrics/summary.json``: dataset -> model -> ``dense`` / ``svm`` -> metric
  mean and std, and ``svm_minus_dense`` -> metric -> the fold-paired
  difference with its 95 % interval from the corrected resampled t-test
  (``ci_low``, ``ci_high``, ``p_value_t``) and the Wilcoxon signed-rank
  p-value (``p_value_wilcoxon``); see :mod:`ultrasound_transfer.evaluation.statistics`;
* ``metrics/summary.md``: one table per metric in the paper's layout (models as
  rows, dataset x classifier as columns, ``mean ± std`` over folds, the best
  of each dataset in bold), then the SVM-minus-dense table.
"""

from __future__ import annotations


import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.common import PipelineError, load_params, log, read_json, require, run_stage, write_atomic, write_json
from ultrasound_transfer.paths import FOLDS_DIR, METRICS_DIR, SUMMARY_DIR
from ultrasound_transfer.evaluation.statistics import compare_paired, mean_fold_sizes

CLASSIFIERS = {"dense": "dense head", "svm": "SVM"}
TABLE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def classifier_comparison(per_fold: pd.DataFrame, n_train: float, n_test: float) -> dict:
    """SVM minus dense head, per metric, paired by fold."""
    dense = per_fold[per_fold["classifier"] == "dense"].set_index("fold").sort_index()
    svm = per_fold[per_fold["classifier"] == "svm"].set_index("fold").sort_index()
    return {m: compare_paired(svm[m].to_numpy(), dense[m].to_numpy(), n_train, n_test) for m in TABLE_METRICS}


def collect(datasets: list[str], models: list[str]) -> dict:
    """Nested dict dataset -> model -> classifier -> metrics, from ``metrics/cv``."""
    summary: dict = {}
    for dataset in datasets:
        n_train, n_test = mean_fold_sizes(read_json(FOLDS_DIR / f"{dataset}.json"))
        for model in models:
            metrics = read_json(METRICS_DIR / dataset / f"{model}.json")
            per_fold = pd.read_csv(METRICS_DIR / dataset / f"{model}.folds.csv")
            summary.setdefault(dataset, {})[model] = {
                **{c: metrics[c] for c in CLASSIFIERS},
                "svm_minus_dense": classifier_comparison(per_fold, n_train, n_test),
            }
    return summary


def best_cell(summary: dict, dataset: str, metric: str) -> tuple[str, str]:
    """(model, classifier) with the highest mean ``metric`` on ``dataset``."""
    cells = [(m[c][metric], model, c) for model, m in summary[dataset].items() for c in CLASSIFIERS]
    _, model, classifier = max(cells)
    return model, classifier


def metric_table(summary: dict, metric: str, models: list[str]) -> str:
    """One markdown table: models as rows, dataset x classifier as columns, best in bold."""
    headers = ["model"] + [f"{d} {label}" for d in summary for label in CLASSIFIERS.values()]
    best = {d: best_cell(summary, d, metric) for d in summary}
    rows = []
    for model in models:
        row = [model]
        for dataset in summary:
            for classifier in CLASSIFIERS:
                m = summary[dataset][model][classifier]
                cell = f"{m[metric]:.3f} ± {m[metric + '_std']:.3f}"
                row.append(f"**{cell}**" if best[dataset] == (model, classifier) else cell)
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github")


def comparison_table(summary: dict, models: list[str], metric: str = "accuracy") -> str:
    """SVM minus dense head: difference, 95 % interval, both p-values."""
    headers = ["model"] + [f"{d} {h}" for d in summary for h in (f"Δ{metric} [95 % CI]", "p (t)", "p (Wilcoxon)")]
    rows = []
    for model in models:
        row = [model]
        for dataset in summary:
            c = summary[dataset][model]["svm_minus_dense"][metric]
            row += [f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                    f"{c['p_value_t']:.3f}", f"{c['p_value_wilcoxon']:.3f}"]
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github")


def render_markdown(summary: dict, models: list[str], ft_fraction: float, n_folds: dict[str, int]) -> str:
    """The whole ``summary.md``."""
    folds = ", ".join(f"{d}: {n}" for d, n in n_folds.items())
    parts = [
        "# Cross-validated results",
        "",
        f"ft_fraction = {ft_fraction}; mean ± sample std over the test folds ({folds}); "
        "best of each dataset in bold.",
    ]
    for metric in TABLE_METRICS:
        parts += ["", f"## {metric}", "", metric_table(summary, metric, models)]
    parts += [
        "", "## SVM minus dense head (accuracy)", "",
        "Fold-paired difference; 95 % interval and p from the corrected resampled t-test "
        "(Nadeau & Bengio 2003); Wilcoxon signed-rank p beside it (with 5 folds it cannot go below 0.0625). "
        "summary.json has the same for every metric.",
        "", comparison_table(summary, models),
    ]
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
