"""The report on two networks evaluated by the real evaluate stage: reading order, intervals, Holm over the family."""

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from stages import evaluate, report
from tests.stages.test_evaluate import N, noise_plus, toy_project
from ultrasound_transfer.evaluation.shortcuts import shortcut_audit
from ultrasound_transfer.evaluation.statistics import holm_adjusted


def parse_markdown_tables(text):
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def two_networks(project, svm=None):
    """Network M's SVM features carry the label; network W's are noise. Malignant images are saved wider:
    normalize's shortcut audit (run here on the toy manifest) must see it."""
    rng = np.random.default_rng(5)
    manifest = toy_project(project, lambda m, parts, k: noise_plus(m["label"].to_numpy() * 2.0 + rng.normal(0, 1, N)),
                           svm=svm)
    audited = manifest.assign(height=300, width=400 + 100 * manifest["label"], padding_share=0.1,
                              mean_gray=rng.normal(100, 5, N), bright_share=0.0)
    np.save(project / "data/prepared/phantom/images.npy", rng.integers(0, 256, (N, 32, 32)).astype(np.uint8))
    (project / "data/prepared/phantom/report.json").write_text(
        json.dumps({"shortcut_audit": shortcut_audit(audited, warning_auc=0.7)}))
    evaluate.main(["phantom", "M"])
    shutil.copytree(project / "models/phantom/M", project / "models/phantom/W")
    (project / "data/features/phantom/W").mkdir(parents=True)
    for path in (project / "data/features/phantom/M").glob("*.npz"):
        with np.load(path) as stored:
            np.savez(project / "data/features/phantom/W" / path.name, pooled=rng.normal(size=(N, 6)),
                     ids=stored["ids"])
    evaluate.main(["phantom", "W"])
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"] = ["M", "W"]
    project.write_params(params)


def run_report(project):
    # The toy networks M and W are not in the schema's list of models: load settings without it.
    from ultrasound_transfer import parameters
    from ultrasound_transfer.common import load_params
    from ultrasound_transfer.settings import settings_from_params

    report.load_settings = lambda: settings_from_params(load_params())
    try:
        report.main([])
    finally:
        report.load_settings = parameters.load_settings
    return (project / "metrics/summary.md").read_text(), json.loads((project / "metrics/summary.json").read_text())


def test_the_report_reads_in_a_reviewers_order_with_intervals_and_holm_over_the_family(project):
    two_networks(project)
    text, summary = run_report(project)
    order = ["## Data and splits", "### Shortcut audit", "## phantom: per image", "## phantom: per case",
             "## Calibration: reliability",
             "## Primary comparison: SVM minus dense head, ROC-AUC", "## Secondary comparisons",
             "## The paper's tables"]
    positions = [text.index(heading) for heading in order]
    assert positions == sorted(positions)
    data = parse_markdown_tables(text.split("## Data and splits")[1])[0]
    assert data[2][:3] == ["phantom", "60", "30"] and "benign 30, malignant 30" in data[2]
    audit = parse_markdown_tables(text.split("### Shortcut audit")[1])[0][2]
    assert audit[0] == "phantom" and audit[1].startswith("1.000") and audit[-1] == "**warning**"
    assert "native_width 1.00" in audit[4] and summary["shortcut_audit"]["phantom"]["warnings"]

    per_image = {(row[0], row[1]): row for row in parse_markdown_tables(text.split("## phantom: per image")[1])[0][2:]}
    auc = per_image[("M", "SVM")][2]
    point, low, high = (float(x) for x in auc.replace("[", "").replace("]", "").replace(",", "").split())
    assert low <= point <= high and point > 0.7
    assert summary["phantom"]["M"]["image"]["svm"]["roc_auc"] == pytest.approx(point, abs=5e-4)

    primary = summary["primary"]
    assert primary["family"] == ["phantom/M", "phantom/W"] and primary["tests_in_family"] == 2
    raw = [summary["phantom"][m]["svm_minus_dense"]["roc_auc"]["p_value_t"] for m in ("M", "W")]
    holm = [summary["phantom"][m]["svm_minus_dense"]["roc_auc"]["p_value_holm"] for m in ("M", "W")]
    assert holm == pytest.approx(holm_adjusted(raw))
    rows = parse_markdown_tables(text.split("## Primary comparison")[1])[0][2:]
    assert [row[1] for row in rows] == ["M", "W"] and rows[0][4] == f"{holm[0]:.3f}"
    # The training size of the corrected test is the fit part each classifier learned from.
    per_fold = pd.read_csv(project / "metrics/cv/phantom/M.folds.csv")
    n_train = per_fold[per_fold["classifier"] == "dense"]["n_train"].mean()
    assert summary["phantom"]["M"]["svm_minus_dense"]["roc_auc"]["n_train"] == pytest.approx(n_train)
    assert "Both classifiers learned from the same labelled images" in text
    reliability = parse_markdown_tables(text.split("## Calibration: reliability")[1])[0]
    counts = [int(cell.split("(")[1].rstrip(")")) for cell in reliability[2][2:] if cell]
    assert reliability[2][:2] == ["M", "dense head"] and sum(counts) == N      # every test image in one bin
    assert "### accuracy" in text and "argmax" in text.split("## The paper's tables")[1].lower()
    errors = text.split("## Most confident errors")[1]
    for model in ("M", "W"):
        assert f"`metrics/errors/phantom/{model}.png`" in errors
        sheet = cv2.imread(str(project / f"metrics/errors/phantom/{model}.png"), cv2.IMREAD_GRAYSCALE)
        assert sheet.shape[0] > 4 * 112 and sheet.std() > 0     # four rows: dense and SVM, FN and FP


def test_the_other_svm_protocol_is_named(project):
    two_networks(project, svm={"train_on": "training", "C_selection": "inner"})
    text, _ = run_report(project)
    assert "svm.train_on = training" in text
