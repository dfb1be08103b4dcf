import json

import pandas as pd

from stages import report
from ultrasound_transfer.evaluation.scoring import BINARY_METRICS, summarize_folds
from ultrasound_transfer.evaluation.statistics import compare_paired

METRICS = list(BINARY_METRICS)


def write_model(project, model, dense_acc, svm_acc, train_on="fit", svm_images=64):
    out = project / "metrics/cv/phantom"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for classifier, accs, n_train in (("dense", dense_acc, 64), ("svm", svm_acc, svm_images)):
        for k, a in enumerate(accs, start=1):
            rows.append({"classifier": classifier, "fold": k, "n_train": n_train, **{m: a for m in METRICS}})
    per_fold = pd.DataFrame(rows)
    per_fold.to_csv(out / f"{model}.folds.csv", index=False)
    metrics = {c: summarize_folds(per_fold[per_fold.classifier == c][METRICS].to_dict("records"))
               for c in ("dense", "svm")}
    (out / f"{model}.json").write_text(json.dumps({**metrics, "svm_train_on": train_on}))


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
    (project / "data/folds/phantom.json").write_text(json.dumps({"n_images": 100, "folds": folds}))
    write_model(project, "VGG16", [0.6, 0.62, 0.58, 0.61, 0.59], [0.7, 0.75, 0.66, 0.72, 0.69])
    write_model(project, "ResNet50", [0.8, 0.82, 0.78, 0.81, 0.79], [0.79, 0.8, 0.8, 0.78, 0.8])
    project.write_params({"datasets": ["phantom"], "models": ["VGG16", "ResNet50"], "ft_fraction": 0.15})
    report.main([])

    summary = json.loads((project / "metrics/summary.json").read_text())
    comparison = summary["phantom"]["VGG16"]["svm_minus_dense"]["accuracy"]
    expected = compare_paired([0.7, 0.75, 0.66, 0.72, 0.69], [0.6, 0.62, 0.58, 0.61, 0.59], 80, 20)
    assert comparison == expected
    assert any("ci" in k for k in comparison) and any("p_value" in k for k in comparison)

    text = (project / "metrics/summary.md").read_text()
    tables = parse_markdown_tables(text)
    for table in tables:
        assert len({len(row) for row in table}) == 1          # every row as wide as the header
    accuracy = {row[0]: row[1:] for row in tables[0][2:]}
    assert accuracy["ResNet50"][0] == "**0.800 ± 0.016**"     # best of the dataset: ResNet50's dense head
    assert not any(cell.startswith("**") for cell in accuracy["VGG16"])
    for heading in ("## sensitivity (recall of malignant)", "## PPV (precision of malignant)",
                    "## precision, macro average over classes", "### specificity (recall of benign)"):
        assert heading in text
    assert ("same labelled images in every fold (svm.train_on = fit; mean per fold: phantom: dense head 64, SVM 64)"
            in text)
    comparisons = text.split("## SVM minus dense head")[1]
    vgg = {row[0]: row for row in parse_markdown_tables(comparisons)[0][2:]}["VGG16"]
    assert vgg[1].startswith("+0.104 [") and float(vgg[2]) < 0.05


def test_the_other_svm_protocol_and_untestable_differences_are_named(project):
    (project / "data/folds").mkdir(parents=True)
    folds = [{"test_indices": list(range(k * 20, k * 20 + 20))} for k in range(5)]
    (project / "data/folds/phantom.json").write_text(json.dumps({"n_images": 100, "folds": folds}))
    write_model(project, "VGG16", [0.6] * 5, [0.7] * 5, train_on="training", svm_images=80)
    project.write_params({"datasets": ["phantom"], "models": ["VGG16"], "ft_fraction": 0.15})
    report.main([])
    text = (project / "metrics/summary.md").read_text()
    assert "svm.train_on = training" in text and "dense head 64, SVM 80" in text
    row = parse_markdown_tables(text.split("### accuracy")[1])[0][2]
    assert row[1] == "+0.100 [+0.100, +0.100]" and row[2] == "n/a"    # every fold +0.1: no p = 0 claim
