import json

import pandas as pd

from stages import report
from ultrasound_transfer.evaluation.scoring import summarize_folds
from ultrasound_transfer.evaluation.statistics import compare_paired

METRICS = ["accuracy", "precision", "recall", "f1", "roc_auc"]


def write_model(project, model, dense_acc, svm_acc):
    out = project / "metrics/cv/toy"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for classifier, accs in (("dense", dense_acc), ("svm", svm_acc)):
        for k, a in enumerate(accs, start=1):
            rows.append({"classifier": classifier, "fold": k, **{m: a for m in METRICS}})
    per_fold = pd.DataFrame(rows)
    per_fold.to_csv(out / f"{model}.folds.csv", index=False)
    metrics = {c: summarize_folds(per_fold[per_fold.classifier == c][METRICS].to_dict("records")) for c in ("dense", "svm")}
    (out / f"{model}.json").write_text(json.dumps(metrics))


def parse_markdown_tables(text):
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_summary_tables_parse_mark_best_and_compare_classifiers(project):
    (project / "data/folds").mkdir(parents=True)
    folds = [{"test_indices": list(range(k * 20, k * 20 + 20))} for k in range(5)]
    (project / "data/folds/toy.json").write_text(json.dumps({"n_images": 100, "folds": folds}))
    write_model(project, "VGG16", [0.6, 0.62, 0.58, 0.61, 0.59], [0.7, 0.75, 0.66, 0.72, 0.69])
    write_model(project, "ResNet50", [0.8, 0.82, 0.78, 0.81, 0.79], [0.79, 0.8, 0.8, 0.78, 0.8])
    project.write_params({"datasets": ["toy"], "models": ["VGG16", "ResNet50"], "ft_fraction": 0.15})
    report.main([])

    summary = json.loads((project / "metrics/summary.json").read_text())
    comparison = summary["toy"]["VGG16"]["svm_minus_dense"]["accuracy"]
    expected = compare_paired([0.7, 0.75, 0.66, 0.72, 0.69], [0.6, 0.62, 0.58, 0.61, 0.59], 80, 20)
    assert comparison == expected
    assert any("ci" in k for k in comparison) and any("p_value" in k for k in comparison)

    tables = parse_markdown_tables((project / "metrics/summary.md").read_text())
    assert len(tables) == len(METRICS) + 1
    for table in tables:
        assert len({len(row) for row in table}) == 1          # every row as wide as the header
    accuracy = {row[0]: row[1:] for row in tables[0][2:]}
    assert accuracy["ResNet50"][0] == "**0.800 ± 0.016**"     # best of the dataset: ResNet50's dense head
    assert not any(cell.startswith("**") for cell in accuracy["VGG16"])
    vgg = {row[0]: row for row in tables[-1][2:]}["VGG16"]
    assert vgg[1].startswith("+0.104 [") and float(vgg[2]) < 0.05
