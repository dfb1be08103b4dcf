import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.evaluation.statistics import compare_paired, supported_selections
from ultrasound_transfer.study import comparison as compare


def entry(rev, name, ft_fraction, seed=42, models=("A", "B"), svm_C=1.0):
    metrics = {f"metrics/cv/toy/{model}.json": {"data": {"folds": {"svm": {"roc_auc": 0.7}}}} for model in models}
    params = {"ft_fraction": ft_fraction, "seed": seed, "datasets": ["toy"], "models": list(models),
              "cv": {"n_splits": 5, "repeats": 1}, "svm": {"C": svm_C}}
    data = {"rev": rev, "params": {"params.yaml": {"data": params}}, "metrics": metrics}
    return {"rev": rev, "name": name, "data": data}


def show(*entries):
    base, *experiments = entries
    return [{"rev": "workspace", "name": None, "data": entry("workspace", None, 0.15)["data"]},
            {**base, "experiments": [{"revs": [e]} for e in experiments]}]


NOISE = np.array([0.0, 0.01, -0.01, 0.02, -0.02])
LEVEL = {0.0: 0.65, 0.15: 0.70, 0.5: 0.80}
SHIFT = {0.0: 0, 0.15: 1, 0.5: 2}


def reader_for(runs_by_rev):
    """Per-split SVM and dense scores: a level per ft_fraction, noise per seed."""
    def read(rev, path):
        ft_fraction, seed = runs_by_rev[rev]
        scores = LEVEL[ft_fraction] + np.roll(NOISE, seed + SHIFT[ft_fraction])
        rows = [{"classifier": c, "repeat": 1, "fold": k + 1, "split": k + 1, "n_train": 80, "n_test": 24,
                 "roc_auc": s - (0.05 if c == "dense" else 0)} for c in ("dense", "svm") for k, s in enumerate(scores)]
        return pd.DataFrame(rows).to_csv(index=False)
    return read


def test_experiments_differing_in_seed_are_pooled_as_repeats_not_dropped():
    entries = [entry(f"r{f}{s}", f"exp-{f}-{s}", f, seed=s) for f in (0.0, 0.15, 0.5) for s in (1, 2, 3)]
    runs, left_out = compare.select_experiments(compare.experiment_records(show(*entries)))
    assert len(runs) == 9 and left_out == []
    read = reader_for({f"r{f}{s}": (f, s) for f in (0.0, 0.15, 0.5) for s in (1, 2, 3)})
    scores = {"A": compare.split_scores(runs, "toy", "A", metric="roc_auc", read=read)}
    selections = supported_selections(compare.strategy_selections(scores, classifier="svm", metric="roc_auc"))
    best = compare.selection_table(selections, "roc_auc").iloc[0]
    assert best["blocks"] == 15 and best["blocks left out"] == 0         # 3 seeds x 5 folds
    assert (best["best ft_fraction"], best["runner-up"], best["better by"]) == (0.5, 0.15, 0.1)
    table = compare.paper_table(scores, "roc_auc")
    assert table["splits"].tolist() == [15, 15, 15]


def test_the_margin_interval_is_the_corrected_test_on_the_pooled_blocks():
    entries = [entry(f"r{f}", f"exp-{f}", f, seed=0) for f in (0.0, 0.15, 0.5)]
    runs = compare.sweep(compare.experiment_records(show(*entries)))
    read = reader_for({f"r{f}": (f, 0) for f in (0.0, 0.15, 0.5)})
    scores = {"A": compare.split_scores(runs, "toy", "A", metric="roc_auc", read=read)}
    selections = supported_selections(compare.strategy_selections(scores, classifier="svm", metric="roc_auc"))
    best = compare.selection_table(selections, "roc_auc").iloc[0]
    expected = compare_paired(LEVEL[0.5] + np.roll(NOISE, 2), LEVEL[0.15] + np.roll(NOISE, 1), 80, 24)
    assert best["95 % CI"] == f"[{expected['ci_low']:+.3f}, {expected['ci_high']:+.3f}]"
    # The same ranking in all five blocks, three strategies: Iman-Davenport p = 0 (shown), and the choice holds.
    assert float(best["Iman-Davenport p (descriptive)"]) == 0.0 and best["supported"] == "yes"


def test_for_brier_the_best_strategy_is_the_lowest():
    entries = [entry(f"r{f}", f"exp-{f}", f, seed=0) for f in (0.0, 0.15, 0.5)]
    runs = compare.sweep(compare.experiment_records(show(*entries)))
    read = reader_for({f"r{f}": (f, 0) for f in (0.0, 0.15, 0.5)})
    scores = {"A": compare.split_scores(runs, "toy", "A", metric="roc_auc", read=read)}
    for table in scores.values():           # the same numbers read as a Brier score: now lower is better
        table["brier"] = table["roc_auc"]
    lowest = compare.strategy_selections(scores, classifier="svm", metric="brier")[0]
    highest = compare.strategy_selections(scores, classifier="svm", metric="roc_auc")[0]
    assert lowest["best"] == min(LEVEL, key=LEVEL.get) and highest["best"] == max(LEVEL, key=LEVEL.get)
    assert lowest["comparisons"][0]["mean_diff"] > 0          # 'better by' is an advantage whichever the direction


def test_experiments_that_differ_in_anything_else_or_repeat_another_are_listed_with_the_reason():
    entries = [entry("a", "exp-0", 0.0), entry("b", "exp-05", 0.5), entry("c", "exp-05-again", 0.5),
               entry("d", "other-C", 0.5, svm_C=10.0)]
    runs, left_out = compare.select_experiments(compare.experiment_records(show(*entries)))
    assert [r["name"] for r in runs] == ["exp-0", "exp-05"]
    assert "exp-05-again: the same params as exp-05, which is newer" in left_out[0] or \
        "exp-05: the same params as exp-05-again" in left_out[0]
    assert any(line.startswith("other-C: differs from the compared experiments in svm.C") for line in left_out)


def test_run_comparison_writes_the_left_out_list(project):
    entries = [entry("a", "exp-0", 0.0, seed=0), entry("b", "exp-05", 0.5, seed=0),
               entry("d", "other-C", 0.5, svm_C=10.0)]
    (project / "show.json").write_text(json.dumps(show(*entries)))
    compare.run_comparison(exp_json=project / "show.json", read=reader_for({"a": (0.0, 0), "b": (0.5, 0)}))
    text = (project / "metrics/compare/toy.md").read_text()
    assert "Left out:\n- other-C: differs from the compared experiments in svm.C" in text
    assert "| A " in text and "Iman-Davenport p" in text


def test_plot_page_embeds_the_points():
    page = compare.plot_html(pd.DataFrame([{"dataset": "toy", "model": "A", "ft_fraction": 0.5, "roc_auc": 0.8,
                                            "low": 0.79, "high": 0.81}]), "roc_auc")
    assert 'vegaEmbed("#compare"' in page and '"ft_fraction": 0.5' in page


def test_no_sweep_is_a_clear_error():
    with pytest.raises(PipelineError, match="fewer than two ft_fraction values"):
        compare.sweep(compare.experiment_records(show(entry("base", "main", 0.15))))


def test_a_run_whose_splits_are_among_another_runs_is_left_out_not_averaged_in():
    one, three = entry("a", "seed0-r1", 0.5, seed=0), entry("b", "seed0-r3", 0.5, seed=0)
    three["data"]["params"]["params.yaml"]["data"]["cv"]["repeats"] = 3
    runs, left_out = compare.select_experiments(compare.experiment_records(show(entry("c", "base", 0.0), one, three)))
    assert [r["name"] for r in runs] == ["base", "seed0-r3"]
    assert left_out == ["seed0-r1: its splits (cv.repeats = 1) are among those of seed0-r3 (cv.repeats = 3), "
                        "same ft_fraction and seed"]


def test_a_metric_no_experiment_has_is_a_clear_error(project):
    (project / "show.json").write_text(json.dumps(show(entry("a", "exp-0", 0.0, seed=0), entry("b", "x", 0.5, seed=0))))
    with pytest.raises(PipelineError, match="has the metric 'f1_macro'"):
        compare.run_comparison(metric="f1_macro", exp_json=project / "show.json",
                               read=reader_for({"a": (0.0, 0), "b": (0.5, 0)}))


@pytest.mark.parametrize("text, message", [("[{\"rev\": ", "not valid JSON"), ('{"rev": "x"}', "not the output of"),
                                           (None, "no such file")])
def test_a_malformed_exp_json_is_refused_clearly(project, text, message):
    if text is not None:
        (project / "show.json").write_text(text)
    with pytest.raises(PipelineError, match=f"--exp-json show.json: {message}"):
        compare.run_comparison(exp_json=Path("show.json"))


def test_one_weights_arm_is_compared_by_its_prefix_and_the_table_names_its_weights(project):
    arm = [entry(r, f"paper-radimagenet-ft{ft:g}", ft, models=("A",)) for r, ft in (("c", 0.0), ("d", 0.5))]
    for record in arm:
        record["data"]["params"]["params.yaml"]["data"]["weights"] = {"A": "models/backbones/a.h5"}
    entries = [entry("a", "paper-ft0", 0.0), entry("b", "paper-ft0.5", 0.5), *arm]
    (project / "show.json").write_text(json.dumps(show(*entries)))
    read = reader_for({"a": (0.0, 42), "b": (0.5, 42), "c": (0.0, 42), "d": (0.5, 42)})
    compare.run_comparison(exp_json=project / "show.json", read=read, prefix="paper-radimagenet-")
    text = (project / "metrics/compare/toy.md").read_text()
    assert "Initial weights: A `models/backbones/a.h5`" in text and "paper-ft0.5" not in text
    with pytest.raises(PipelineError, match=r"--prefix 'paper-imagenet-': no experiment's name starts with it"):
        compare.run_comparison(exp_json=project / "show.json", read=read, prefix="paper-imagenet-")


def test_a_second_weights_arm_is_compared_split_by_split_with_the_first_and_must_differ_only_in_weights(project):
    base = [entry(r, f"paper-ft{ft:g}", ft) for r, ft in (("a", 0.0), ("b", 0.5))]
    other = [entry(r, f"paper-rin-ft{ft:g}", ft, models=("A",)) for r, ft in (("c", 0.0), ("d", 0.5))]
    for record in other:
        record["data"]["params"]["params.yaml"]["data"]["weights"] = {"A": "models/backbones/a.h5"}
    (project / "show.json").write_text(json.dumps(show(*base, *other)))
    gain = {"a": 0.0, "b": 0.0, "c": 0.03, "d": 0.0}       # the domain weights help at ft_fraction 0 only
    plain = reader_for({"a": (0.0, 42), "b": (0.5, 42), "c": (0.0, 42), "d": (0.5, 42)})

    def read(rev, path):
        table = pd.read_csv(io.StringIO(plain(rev, path)))
        table["roc_auc"] += gain[rev] + np.where(table["fold"] % 2, 0.004, -0.004) * (rev == "c")
        return table.to_csv(index=False)

    out = compare.run_arm_comparison(("paper", "paper-rin"), exp_json=project / "show.json", read=read)
    table = pd.read_csv(io.StringIO("\n".join(line for line in out.read_text().splitlines() if line.startswith("|")
                                              and "---" not in line)), sep="|").iloc[:, 1:-1]
    table.columns = [c.strip() for c in table.columns]
    rows = {float(r["ft_fraction"]): r for _, r in table.iterrows()}
    assert set(rows) == {0.0, 0.5} and all(r["network"].strip() == "A" for r in rows.values())
    assert float(rows[0.0]["other − base"]) == pytest.approx(0.03, abs=0.002)       # 0.03 + the folds' ±0.004
    assert float(rows[0.5]["other − base"]) == 0.0
    assert rows[0.0]["other weights"].strip() == "models/backbones/a.h5" and rows[0.0]["base weights"].strip() == "none"
    assert float(rows[0.0]["Holm p (family)"]) < 0.05
    other[1]["data"]["params"]["params.yaml"]["data"]["svm"] = {"C": 10.0}
    (project / "show.json").write_text(json.dumps(show(*base, *other)))
    with pytest.raises(PipelineError, match=r"paper-rin-ft0.5 differs from paper-ft0 in svm.C, not only in its "
                                            r"weights"):
        compare.run_arm_comparison(("paper", "paper-rin"), exp_json=project / "show.json", read=read)
