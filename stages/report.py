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
  of each dataset in bold), headed by what the metric is (malignant is the
  positive class; macro averages say so), then the SVM-minus-dense tables for
  accuracy, sensitivity, specificity and ROC-AUC (balanced accuracy instead of
  sensitivity and specificity for more than two classes).
"""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.common import PipelineError, log, read_json, run_stage, write_atomic, write_json
from ultrasound_transfer.evaluation.statistics import compare_paired, format_p, mean_fold_sizes
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.paths import FOLDS_DIR, METRICS_DIR, SUMMARY_DIR

CLASSIFIERS = {"dense": "dense head", "svm": "SVM"}
# Tables of summary.md, in order, with what each metric is.
TABLE_METRICS = {
    "accuracy": "accuracy",
    "sensitivity": "sensitivity (recall of malignant)",
    "specificity": "specificity (recall of benign)",
    "ppv": "PPV (precision of malignant)",
    "f1": "F1 of malignant",
    "balanced_accuracy": "balanced accuracy (mean recall over classes)",
    "precision_macro": "precision, macro average over classes",
    "recall_macro": "recall, macro average over classes",
    "roc_auc": "ROC-AUC (malignant vs benign; macro one-vs-rest for more classes)",
}
# SVM minus dense head is tested on these, where the dataset has them.
COMPARED_METRICS = ("accuracy", "sensitivity", "specificity", "balanced_accuracy", "roc_auc")


def classifier_comparison(per_fold: pd.DataFrame, n_train: float, n_test: float) -> dict:
    """SVM minus dense head, paired by fold, for every metric both have."""
    dense = per_fold[per_fold["classifier"] == "dense"].set_index("fold").sort_index()
    svm = per_fold[per_fold["classifier"] == "svm"].set_index("fold").sort_index()
    metrics = [m for m in TABLE_METRICS if m in per_fold and per_fold[m].notna().all()]
    return {m: compare_paired(svm[m].to_numpy(), dense[m].to_numpy(), n_train, n_test) for m in metrics}


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
                "svm_train_on": metrics.get("svm_train_on", "training"),
                "n_train": {c: float(per_fold.loc[per_fold["classifier"] == c, "n_train"].mean()) for c in CLASSIFIERS},
                "svm_minus_dense": classifier_comparison(per_fold, n_train, n_test),
            }
    return summary


def has_metric(summary: dict, dataset: str, metric: str) -> bool:
    """Whether ``dataset``'s results have ``metric`` (sensitivity only for two classes, ...)."""
    return all(metric in m[c] for m in summary[dataset].values() for c in CLASSIFIERS)


def best_cell(summary: dict, dataset: str, metric: str) -> tuple[str, str]:
    """(model, classifier) with the highest mean ``metric`` on ``dataset``."""
    cells = [(m[c][metric], model, c) for model, m in summary[dataset].items() for c in CLASSIFIERS]
    _, model, classifier = max(cells)
    return model, classifier


def metric_table(summary: dict, metric: str, models: list[str]) -> str:
    """One markdown table: models as rows, dataset x classifier as columns, best in bold."""
    datasets = [d for d in summary if has_metric(summary, d, metric)]
    headers = ["model"] + [f"{d} {label}" for d in datasets for label in CLASSIFIERS.values()]
    best = {d: best_cell(summary, d, metric) for d in datasets}
    rows = []
    for model in models:
        row = [model]
        for dataset in datasets:
            for classifier in CLASSIFIERS:
                m = summary[dataset][model][classifier]
                cell = f"{m[metric]:.3f} ± {m[metric + '_std']:.3f}"
                row.append(f"**{cell}**" if best[dataset] == (model, classifier) else cell)
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github")


def comparison_table(summary: dict, models: list[str], metric: str) -> str:
    """SVM minus dense head: difference, 95 % interval, both p-values."""
    datasets = [d for d in summary if has_metric(summary, d, metric)]
    headers = ["model"] + [f"{d} {h}" for d in datasets for h in ("Δ [95 % CI]", "p (t)", "p (Wilcoxon)")]
    rows = []
    for model in models:
        row = [model]
        for dataset in datasets:
            c = summary[dataset][model]["svm_minus_dense"][metric]
            row += [f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                    format_p(c["p_value_t"]), format_p(c["p_value_wilcoxon"])]
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github")


def training_images_line(summary: dict) -> str:
    """Which images each classifier learned from, so a reader sees whether the comparison is fair."""
    protocols = {m["svm_train_on"] for d in summary.values() for m in d.values()}
    counts = []
    for dataset, results in summary.items():
        n_train = next(iter(results.values()))["n_train"]       # the folds, and so the counts, are shared
        counts.append(f"{dataset}: dense head {n_train['dense']:.0f}, SVM {n_train['svm']:.0f}")
    counts = "; ".join(counts)
    if protocols == {"fit"}:
        return (f"Both classifiers learned from the same labelled images in every fold (svm.train_on = fit; "
                f"mean per fold: {counts}).")
    return (f"The SVM learned from the whole training part, the dense head's early-stopping images included "
            f"(svm.train_on = training): more labelled images than the dense head (mean per fold: {counts}).")


def render_markdown(summary: dict, models: list[str], ft_fraction: float, n_folds: dict[str, int]) -> str:
    """The whole ``summary.md``."""
    folds = ", ".join(f"{d}: {n}" for d, n in n_folds.items())
    parts = [
        "# Cross-validated results",
        "",
        f"ft_fraction = {ft_fraction}; mean ± sample std over the test folds ({folds}); "
        "best of each dataset in bold. Malignant is the positive class; macro averages say so.",
        "", training_images_line(summary),
    ]
    for metric, title in TABLE_METRICS.items():
        if any(has_metric(summary, d, metric) for d in summary):
            parts += ["", f"## {title}", "", metric_table(summary, metric, models)]
    parts += [
        "", "## SVM minus dense head", "",
        "Fold-paired difference; 95 % interval and p from the corrected resampled t-test "
        "(Nadeau & Bengio 2003); Wilcoxon signed-rank p beside it (with 5 folds it cannot go below 0.0625); "
        "n/a where every fold differs by the same amount (no variance to test against). "
        "summary.json has the same for every metric.",
    ]
    for metric in COMPARED_METRICS:
        if any(has_metric(summary, d, metric) for d in summary):
            parts += ["", f"### {TABLE_METRICS[metric]}", "", comparison_table(summary, models, metric)]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> None:
    if argv:
        raise PipelineError(f"usage: python -m stages.report (got arguments {argv}).")
    settings = load_settings()
    datasets, models = list(settings.datasets), list(settings.models)
    summary = collect(datasets, models)
    n_folds = {d: len(read_json(FOLDS_DIR / f"{d}.json")["folds"]) for d in datasets}
    markdown = render_markdown(summary, models, settings.ft_fraction, n_folds)
    write_json(SUMMARY_DIR / "summary.json", summary)
    write_atomic(SUMMARY_DIR / "summary.md", lambda tmp: tmp.write_text(markdown))
    print(markdown, flush=True)
    log("report", f"wrote {SUMMARY_DIR / 'summary.md'} and summary.json")


if __name__ == "__main__":
    run_stage(main)
