import json

import pandas as pd
import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.evaluation.statistics import compare_paired
from ultrasound_transfer.study import comparison as compare


def entry(rev, name, ft_fraction, accuracies, seed=42):
    metrics = {f"metrics/cv/toy/{model}.json": {"data": {"svm": {"accuracy": acc, "accuracy_std": 0.01}}}
               for model, acc in accuracies.items()}
    params = {"ft_fraction": ft_fraction, "seed": seed, "datasets": ["toy"], "models": list(accuracies)}
    data = {"rev": rev, "params": {"params.yaml": {"data": params}}, "metrics": metrics}
    return {"rev": rev, "name": name, "data": data}


SHOW = [
    {"rev": "workspace", "name": None, **{"data": entry("workspace", None, 0.15, {"A": 0.7})["data"]}},
    {**entry("base", "main", 0.15, {"A": 0.70, "B": 0.60}),
     "experiments": [{"revs": [entry("e1", "exp-0", 0.0, {"A": 0.65, "B": 0.62})]},
                     {"revs": [entry("e2", "exp-05", 0.5, {"A": 0.80, "B": 0.61})]},
                     {"revs": [entry("e3", "other-seed", 0.5, {"A": 0.99, "B": 0.99}, seed=1)]}]},
]
FOLD_SCORES = {"base": [0.70, 0.72, 0.68, 0.71, 0.69], "e1": [0.64, 0.66, 0.65, 0.66, 0.64],
               "e2": [0.80, 0.82, 0.78, 0.81, 0.79]}


def reader(rev, path):
    if path.endswith("folds.csv"):
        scores = FOLD_SCORES[rev]
        return pd.DataFrame({"classifier": "svm", "fold": range(1, 6), "accuracy": scores}).to_csv(index=False)
    return json.dumps({"n_images": 100, "folds": [{"test_indices": list(range(20))}] * 5})


def test_sweep_keeps_experiments_that_differ_only_in_ft_fraction():
    runs = compare.sweep(compare.experiment_records(SHOW))
    assert [(r["name"], r["params"]["ft_fraction"]) for r in runs] == [("exp-0", 0.0), ("main", 0.15), ("exp-05", 0.5)]


def test_tables_name_the_best_strategy_with_margin_and_interval():
    runs = compare.sweep(compare.experiment_records(SHOW))
    table = compare.paper_table(runs, "toy", ["A", "B"], "accuracy")
    rows_a = table[table["network"] == "A"]
    assert rows_a["ft_fraction"].tolist() == [0.0, 0.15, 0.5]
    assert rows_a["SVM"].tolist() == ["0.650 ± 0.010", "0.700 ± 0.010", "0.800 ± 0.010"]
    assert rows_a["dense head"].tolist() == ["—"] * 3          # not in these records: said, not invented
    best = compare.best_strategies(runs, "toy", ["A"], classifier="svm", metric="accuracy", read=reader).iloc[0]
    assert (best["best ft_fraction"], best["runner-up"], best["margin"]) == (0.5, 0.15, 0.1)
    expected = compare_paired(FOLD_SCORES["e2"], FOLD_SCORES["base"], 80, 20)
    assert best["95 % CI"] == f"[{expected['ci_low']:+.3f}, {expected['ci_high']:+.3f}]"
    # Same ranking in all five folds: Friedman p = exp(-5) with 3 strategies, and the choice holds after Holm.
    assert float(best["Friedman p"]) == pytest.approx(0.007, abs=1e-3) and best["supported"] == "yes"


def test_plot_page_embeds_the_points():
    page = compare.plot_html(pd.DataFrame([{"dataset": "toy", "model": "A", "ft_fraction": 0.5, "accuracy": 0.8,
                                            "low": 0.79, "high": 0.81}]), "accuracy")
    assert 'vegaEmbed("#compare"' in page and '"ft_fraction": 0.5' in page


def test_no_sweep_is_a_clear_error():
    with pytest.raises(PipelineError, match="fewer than two ft_fraction values"):
        compare.sweep(compare.experiment_records([entry("base", "main", 0.15, {"A": 0.7})]))
