"""Stage ``report``: the results in the order a reviewer reads them, and the paper's tables.

Usage: ``python -m stages.report``.  Reads params ``datasets``, ``models``,
``ft_fraction``, ``external`` and ``evaluation``.

Outputs:

* ``metrics/summary.md``, in this order:

  1. *Data and splits*: images, groups, cases and classes per dataset; the
     folds and repeats, and the controls against leakage; the shortcut audit
     of ``normalize`` (how well non-lesion features tell the label);
  2. per network and classifier, on the pooled out-of-fold predictions:
     ROC-AUC, sensitivity and specificity at the operating point, each with
     its interval from a bootstrap over groups, then Brier score and ECE;
     per image, and per case where cases have several images; the
     reliability diagram as a table; then external validation, where params
     ``external`` lists pairs: internal (cross-validated) and external
     figures and the gap between them, with intervals;
  3. the primary comparison, SVM minus dense head on ROC-AUC per split, by
     the corrected repeated k-fold t-test with Holm's adjustment over the
     family of every network x dataset the report tests; then secondary
     comparisons, labelled secondary and not adjusted;
  4. the paper's tables: argmax reading, mean ± std over splits, per image.

* ``metrics/errors/<dataset>/<model>.png`` (two-class datasets): the most
  confident false negatives and false positives of the test folds, per
  classifier (:mod:`ultrasound_transfer.evaluation.error_sheets`), listed at the end of the page;
* ``metrics/summary.json``: every figure the page shows, under the same
  names: ``primary`` (the family and its tests), ``shortcut_audit``
  (dataset -> the audit), ``external`` (``<train>-to-<test>`` -> model -> the
  external stage's figures) and dataset -> model -> ``image`` / ``case`` /
  ``folds`` / ``svm_minus_dense``.

Why the corrected t-test on per-split AUC and not DeLong's test on the
pooled predictions: DeLong's variance treats the classifiers as fixed and
the test images as the only sample, but in cross-validation each split trains
new networks on overlapping data; the corrected repeated-CV test (Bouckaert &
Frank 2004, after Nadeau & Bengio 2003) includes that training variation.
The pooled bootstrap difference is reported beside it.
"""

from __future__ import annotations

import math

import cv2
import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.choices import CLASSIFIERS
from ultrasound_transfer.common import PipelineError, atomic_dir, log, run_stage
from ultrasound_transfer.data.reference_standards import SYNTHETIC, reference_standard
from ultrasound_transfer.evaluation.error_sheets import errors_sheet
from ultrasound_transfer.evaluation.statistics import compare_classifiers, format_p, holm_adjusted
from ultrasound_transfer.outputs import cv_results, external_results, folds, prepared
from ultrasound_transfer.outputs import summary as summary_output
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.settings import Settings

# How the report names each of choices.CLASSIFIERS.
CLASSIFIER_LABELS = dict(zip(CLASSIFIERS, ("dense head", "SVM")))
PRIMARY = "roc_auc"
# Secondary comparisons, where the dataset has them (two classes: at the operating point).
SECONDARY = {"sensitivity": "sensitivity", "specificity": "specificity", "balanced_accuracy": "balanced accuracy",
             "brier": "Brier score (lower is better)"}
# The paper's tables: argmax reading, per split.
PAPER_TABLES = {
    "argmax_accuracy": "accuracy",
    "argmax_sensitivity": "sensitivity (recall of malignant)",
    "argmax_specificity": "specificity (recall of benign)",
    "argmax_f1": "F1 of malignant",
    "roc_auc": "ROC-AUC (malignant vs benign; macro one-vs-rest for more classes)",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy (mean recall over classes)",
    "precision_macro": "precision, macro average over classes",
}


def collect(datasets: list[str], models: list[str]) -> dict:
    """dataset -> model -> the evaluate stage's figures, and ``svm_minus_dense`` per split-level metric."""
    summary: dict = {}
    for dataset in datasets:
        for model in models:
            metrics = cv_results.load_metrics(dataset, model)
            per_fold = cv_results.load_split_metrics(dataset, model)
            tested = [m for m in (PRIMARY, *SECONDARY) if m in per_fold]
            summary.setdefault(dataset, {})[model] = {
                **metrics,
                "n_train": {c: float(per_fold.loc[per_fold["classifier"] == c, "n_train"].mean()) for c in CLASSIFIERS},
                "svm_minus_dense": {m: compare_classifiers(per_fold, m) for m in tested},
            }
    return summary


def collect_external(settings: Settings) -> dict:
    """``<train>-to-<test>`` -> model -> the external stage's figures, for every pair of params ``external``."""
    return {external_results.folder(p.train, p.test).name: {model: external_results.load_metrics(p.train, p.test, model)
                                                            for model in settings.models}
            for p in settings.external}


def collect_audits(datasets: list[str]) -> dict:
    """dataset -> ``normalize``'s shortcut audit."""
    return {dataset: prepared.load_report(dataset).get("shortcut_audit", {})
            for dataset in datasets}


def audit_section(audits: dict) -> list[str]:
    """The shortcut audit: ROC-AUC of the label from non-lesion features, per dataset."""
    rows = []
    for dataset, audit in audits.items():
        models = audit.get("models", {})
        if not models:
            rows.append([dataset, "—", "—", audit.get("skipped", "not run"), ""])
            continue
        features = audit["features"]
        strongest = sorted(features, key=lambda name: -abs(features[name] - 0.5))[:2]
        presets = models.get("size_presets")
        rows.append([dataset, with_interval(models["all_features"], "roc_auc"),
                     with_interval(models["visible_features"], "roc_auc"),
                     with_interval(presets, "roc_auc") if presets else "— (one size)",
                     ", ".join(f"{name} {features[name]:.2f}" for name in strongest),
                     "**warning**" if audit["warnings"] else ""])
    level = next(iter(audits.values()), {}).get("warning_auc", math.nan)
    return ["", "### Shortcut audit", "",
            "How well the label is told from what is not the lesion (native size and aspect, padding, mean gray, "
            "bright and coloured overlay pixels; the native sizes as scanner presets), by logistic models under "
            f"grouped cross-validation; 0.5 is chance. A warning is raised at ROC-AUC {level:g} or more "
            "(normalize.shortcut_warning_auc), or where an interval's lower bound clears chance by 0.05; each "
            "dataset's data/prepared/<dataset>/report.json has every feature and warning.", "",
            tabulate(rows, headers=["dataset", "all features", "visible to the network", "size presets",
                                    "strongest alone (AUC)", ""], tablefmt="github", disable_numparse=True)]


def external_section(external: dict, models: list[str]) -> list[str]:
    """External validation: per pair, network and classifier, split by split (like for like) and the ensemble."""
    if not external:
        return []
    rows = []
    for pair, results in external.items():
        for model in models:
            for classifier, label in CLASSIFIER_LABELS.items():
                gap, image = results[model]["gap"][classifier], results[model]["image"][classifier]
                rows.append([pair, model, label, f"{value(gap, 'internal_roc_auc'):.3f}",
                             f"{value(gap, 'external_roc_auc'):.3f}",
                             with_interval(gap, "external_minus_internal_roc_auc", signed=True),
                             with_interval(gap, "external_minus_internal_sensitivity", signed=True),
                             with_interval(gap, "external_minus_internal_specificity", signed=True),
                             with_interval(image, "roc_auc"), with_interval(image, "sensitivity"),
                             with_interval(image, "specificity")])
    return ["", "## External validation: trained on one dataset, read on another", "",
            "Split by split, like for like: each split's network with its own classifiers, calibration and "
            "threshold, read on its own test fold (internal) and on every image of the test dataset (external), "
            "averaged over the splits; the gap's interval resamples both datasets' groups, every split recomputed. "
            "Beside it, the deployed model: the ensemble of the splits (mean probability, mean operating point) "
            "on the test dataset, intervals over its groups. Nothing learns from the test dataset.", "",
            tabulate(rows, headers=["train-to-test", "network", "classifier", "internal ROC-AUC (per split)",
                                    "external ROC-AUC (per split)", "gap, ROC-AUC", "gap, sensitivity",
                                    "gap, specificity", "ensemble: ROC-AUC", "ensemble: sensitivity",
                                    "ensemble: specificity"], tablefmt="github", disable_numparse=True)]


def adjust_primary(summary: dict) -> dict:
    """Holm-adjust the primary comparison over every network x dataset; record the family."""
    family = [(d, m) for d, results in summary.items() for m in results]
    adjusted = holm_adjusted([summary[d][m]["svm_minus_dense"][PRIMARY]["p_value_t"] for d, m in family])
    for (dataset, model), p in zip(family, adjusted):
        summary[dataset][model]["svm_minus_dense"][PRIMARY]["p_value_holm"] = p
    tests = sum(not math.isnan(p) for p in adjusted)
    return {"metric": PRIMARY, "comparison": "SVM minus dense head", "test": "corrected repeated k-fold t-test",
            "adjustment": "Holm", "family": [f"{d}/{m}" for d, m in family], "tests_in_family": tests}


def value(figures: dict, name: str) -> float:
    v = figures.get(name)
    return math.nan if v is None else float(v)


def with_interval(figures: dict, name: str, *, signed: bool = False) -> str:
    """'0.912 [0.850, 0.960]' (or '+0.012 [-0.050, +0.060]' for a difference), or '—' where undefined."""
    point = value(figures, name)
    if math.isnan(point):
        return "—"
    form = "+.3f" if signed else ".3f"
    return (f"{point:{form}} [{value(figures, name + '_ci_low'):{form}}, "
            f"{value(figures, name + '_ci_high'):{form}}]")


def data_section(summary: dict, settings: Settings) -> list[str]:
    """Data and splits, and the leakage controls."""
    rows = []
    for dataset, results in summary.items():
        record = folds.load_record(dataset)
        facts = next(iter(results.values())).get("data", {})
        classes = ", ".join(f"{key.removeprefix('images_')} {n}" for key, n in facts.items()
                            if key.startswith("images_"))
        rows.append([dataset, record["n_images"], facts.get("groups", "—"),
                     f"{facts.get('cases', '—')} ({facts.get('cases_with_several_images', '—')})", classes or "—",
                     f"{record['n_splits']} × {record.get('repeats', 1)}", record.get("grouping", "—")])
    table = tabulate(rows, headers=["dataset", "images", "groups", "cases (with > 1 image)", "images per class",
                                    "folds × repeats", "grouping"], tablefmt="github")
    evaluation = settings.evaluation
    rule = evaluation.operating_point + (f" (target {evaluation.target})" if evaluation.operating_point in
                                         ("sensitivity", "specificity") else "")
    groupings = {folds.load_record(d).get("grouping", "near") for d in summary}
    if groupings <= {"near", "exact"}:
        grouped = ("a group (a patient or case, joined with its identical images, and with its near-duplicates "
                   "under cv.grouping = near) never straddles a split")
    else:
        grouped = ("cv.grouping = none: images are split one by one, so views of one patient and near-duplicates "
                   "can straddle splits (the leaky protocol, for measuring the leak; the intervals still resample "
                   "groups)")
    train_on = {m["svm_train_on"] for r in summary.values() for m in r.values()}
    platt = ("the SVM's Platt scaling on the same validation images, which it did not learn from" if train_on == {"fit"}
             else "the SVM's Platt scaling on out-of-inner-fold decision values of those images")
    return [
        "## Data and splits", "", table, "",
        "Case-level figures count a case once with what the folds keep with it (a case joined with the cases "
        "sharing its identical, or under `cv.grouping: near` near-duplicate, images: the groups above), and read "
        "each at a case operating point chosen on validation cases.", "",
        f"Leakage controls: {grouped}; the inner validation part (early stopping, the operating point, {platt}) "
        "and the SVM's C search are grouped and stratified inside each training part; no class, threshold, "
        "calibration or C is chosen on a test fold (only `predict`'s novelty reference scales itself by held-out "
        "images, which no figure here reads). Malignant is the positive class.",
        "",
        f"Operating point: {rule}, chosen per split on its inner validation images. Intervals: "
        f"{evaluation.confidence_level:.0%} percentile bootstrap over groups ({evaluation.bootstrap_resamples} "
        "resamples) of the pooled out-of-fold predictions, averaged over repeats; figures at image level are per "
        f"image, at case level per case (case score: {evaluation.case_score} of its images).",
    ]


# The smallest ROC-AUC difference worth detecting, against which a design is called underpowered: the paper
# reports the SVM about 6 % above the dense head; a design that cannot detect 0.05 can neither confirm nor
# refute that.
MEANINGFUL_AUC_DIFFERENCE = 0.05
WEIGHTS_MEANING = {"none": "random (`weights: none`): the offline demo's networks, not transfer-learned ones",
                   "imagenet": "ImageNet (keras.applications)"}


def run_facts(summary: dict) -> dict:
    """The run's facts (evaluate's ``run`` section), the same for every network; where they differ, each."""
    facts = [results[model].get("run", {}) for results in summary.values() for model in results]
    keys = dict.fromkeys(key for f in facts for key in f)
    return {key: ({f.get(key) for f in facts}.pop() if len({repr(f.get(key)) for f in facts}) == 1
                  else " / ".join(sorted({str(f.get(key)) for f in facts}))) for key in keys}


def run_section(summary: dict, settings: Settings) -> list[str]:
    """What the run is: data and its reference standard, initial weights, input, strategy, folds."""
    facts = run_facts(summary)
    rows = []
    for dataset in summary:
        record = folds.load_record(dataset)
        kind = "synthetic" if dataset in SYNTHETIC else "real"
        source = settings.sources.get(dataset)
        rows.append([dataset, kind, reference_standard(dataset, source.reference_standard if source else None),
                     f"{record['n_splits']} × {record.get('repeats', 1)}"
                     + (" (the dataset's official partition)" if record.get("folds_from") == "official" else "")])
    weights = str(facts.get("weights", "—"))
    lines = ["## What this run is", "",
             tabulate(rows, headers=["dataset", "data", "reference standard (what the labels are)",
                                     "folds × repeats"], tablefmt="github", disable_numparse=True), "",
             f"Networks {', '.join(settings.models)}; initial weights {WEIGHTS_MEANING.get(weights, f'`{weights}`')}; "
             f"input {facts.get('image_size', '—')} px squared by `{facts.get('resize', '—')}`; `ft_fraction` "
             f"{facts.get('ft_fraction', '—')}; up to {facts.get('epochs', '—')} epochs with early stopping; "
             f"Keras on {facts.get('backend', '—')}. The SVM's C chosen "
             + {"validation": "on each split's validation images", "inner": "by inner CV on its training images",
                "fixed": "fixed (`svm.C`)"}.get(str(facts.get("svm_C_selection")), str(facts.get("svm_C_selection")))
             + "; the dense head's softmax "
             + {"platt": "Platt-scaled on the same validation images as the SVM's decision values, so both are "
                         "read alike",
                "none": "read raw (`evaluation.dense_calibration: none`)",
                "argmax": "and the SVM's decision values read by argmax (more than two classes: neither is "
                          "calibrated nor thresholded)"}.get(str(facts.get("dense_calibration")), "—")
             + "."]
    synthetic, random = all(d in SYNTHETIC for d in summary), weights == "none"
    if synthetic or random:
        lines += ["", "**What it cannot show**: " + " and ".join(
            part for part, applies in (("the data are synthetic", synthetic),
                                       ("the backbones start from random weights", random)) if applies)
            + "; its figures show that the study runs end to end, not what transfer learning does on "
            "ultrasound (`ultrasound-transfer protocol paper` runs the paper's study)."]
    return lines


def precision_section(summary: dict, models: list[str]) -> list[str]:
    """How precise the design can be: the primary difference it detects at 80 % power, and the interval widths."""
    rows, underpowered = [], 0
    for dataset, results in summary.items():
        for model in models:
            c = results[model]["svm_minus_dense"][PRIMARY]
            detectable = value(c, "detectable_80")
            half = (value(c, "ci_high") - value(c, "ci_low")) / 2
            short = not math.isnan(detectable) and detectable > MEANINGFUL_AUC_DIFFERENCE
            underpowered += short
            rows.append([dataset, model, f"±{half:.3f}", "—" if math.isnan(detectable) else f"{detectable:.3f}",
                         "underpowered" if short else "adequate"])
    return ["", "## How precise it can be", "",
            "The primary comparison's per-split interval half-width, and the smallest SVM-minus-dense ROC-AUC "
            "difference the corrected test detects with 80 % power at the 5 % level (two-sided), from the observed "
            "spread of the per-split differences (a design sensitivity, not a power computed from the observed "
            f"effect). A design that cannot detect {MEANINGFUL_AUC_DIFFERENCE} (the paper reports the SVM about 6 % "
            "ahead) is underpowered: its p-values cannot tell a missing difference from a small one, so "
            "\"p (Holm) = 1.000\" there reads as \"not measured\", never as \"no difference\". More splits "
            "(`cv.repeats`) and more images narrow it.", "",
            tabulate(rows, headers=["dataset", "network", "Δ ROC-AUC interval half-width",
                                    "detectable Δ at 80 % power", "for a 0.05 difference"],
                     tablefmt="github", disable_numparse=True), "",
            f"{underpowered} of {len(rows)} comparisons are underpowered for a difference of "
            f"{MEANINGFUL_AUC_DIFFERENCE}."]


def flow_section(datasets: list[str]) -> list[str]:
    """The flow of images from the raw folder to the analysis, with each exclusion counted (STARD 2015 item 19)."""
    rows = []
    for dataset in datasets:
        report = prepared.load_report(dataset)
        excluded = report.get("excluded_images", {})
        ignored = report.get("ignored_files", {})
        analysed = report.get("images", 0)
        record = folds.load_record(dataset)
        rows.append([dataset, analysed + sum(excluded.values()) + sum(ignored.values()),
                     "; ".join(f"{reason}: {n}" for reason, n in ignored.items()) or "0",
                     "; ".join(f"{reason}: {n}" for reason, n in excluded.items()) or "0",
                     analysed, report.get("groups", "—"),
                     f"each once per repeat ({record.get('repeats', 1)})"])
    return ["", "## Flow of images (STARD)", "",
            tabulate(rows, headers=["dataset", "files found", "left out: not an image", "excluded: image",
                                    "analysed", "groups", "tested"], tablefmt="github", disable_numparse=True),
            "", "Excluded images are listed with their files in `data/prepared/<dataset>/report.json`."]


def share_text(results: dict) -> str:
    share = value(results, "trained_share")
    return "—" if math.isnan(share) else f"{share:.0%}"


def headline_table(results: dict, models: list[str], level: str) -> str:
    """Per network and classifier: AUC, sensitivity and specificity with intervals, Brier, ECE, share trained."""
    rows = []
    for model in models:
        figures = results[model].get(level)
        if not figures:
            continue
        for classifier, label in CLASSIFIER_LABELS.items():
            f = figures[classifier]
            rows.append([model, label, with_interval(f, "roc_auc"), with_interval(f, "sensitivity"),
                         with_interval(f, "specificity"), f"{value(f, 'brier'):.3f}", f"{value(f, 'ece'):.3f}",
                         share_text(results[model])])
    return tabulate(rows, headers=["network", "classifier", "ROC-AUC", "sensitivity", "specificity", "Brier", "ECE",
                                   "backbone params trained"], tablefmt="github", disable_numparse=True)


def calibration_section(summary: dict, models: list[str]) -> list[str]:
    """Per dataset, network and classifier: Brier, ECE, the debiased calibration error, intercept and slope, each
    with its interval; the dense head's raw softmax beside, labelled, where it was recalibrated."""
    labels = {**CLASSIFIER_LABELS, cv_results.RAW_DENSE: "dense head, raw softmax (not compared)"}
    parts = []
    for dataset, results in summary.items():
        rows = [[model, label, *(with_interval(results[model]["image"][name], figure) for figure in
                                 ("brier", "ece", "calibration_error_debiased", "calibration_intercept",
                                  "calibration_slope"))]
                for model in models for name, label in labels.items() if name in results[model].get("image", {})]
        if rows:
            parts += ["", f"### {dataset}", "", tabulate(rows, headers=[
                "network", "classifier", "Brier", "ECE (binned)", "calibration error (debiased)",
                "intercept (0 is calibrated)", "slope (1 is calibrated)"], tablefmt="github", disable_numparse=True)]
    if not parts:
        return []
    return ["", "## Calibration", "",
            "Per image, pooled out-of-fold, intervals over groups. The binned ECE is biased upward on few images; "
            "the debiased calibration error (Kumar et al., NeurIPS 2019) takes each bin's chance variation off, "
            "and the calibration intercept and slope (logistic recalibration on the log-odds; TRIPOD+AI) say in "
            "which way the probabilities are off: an intercept below 0 means they run too high, a slope below 1 "
            "too extreme.", *parts]


def reliability_section(summary: dict, models: list[str]) -> list[str]:
    """Per dataset: the reliability diagram as a table, observed malignant share (images) per probability bin."""
    parts = []
    for dataset in summary:
        rows, bins = [], None
        for model in models:
            path = cv_results.calibration_path(dataset, model)
            if not path.exists():
                continue
            table = pd.read_csv(path)
            if table.empty:
                continue
            bins = sorted({(low, high) for low, high in zip(table["bin_low"], table["bin_high"])}) if bins is None \
                else sorted(set(bins) | set(zip(table["bin_low"], table["bin_high"])))
            for classifier, label in CLASSIFIER_LABELS.items():
                mine = table[table["series"] == classifier].set_index(["bin_low", "bin_high"])
                rows.append((model, label, mine))
        if not rows:
            continue
        headers = ["network", "classifier", *(f"{low:.1f}–{high:.1f}" for low, high in bins)]
        cells = [[model, label, *(f"{m.loc[b, 'observed_fraction']:.2f} ({int(m.loc[b, 'count'])})" if b in m.index
                                  else "" for b in bins)] for model, label, m in rows]
        parts += ["", f"### {dataset}", "", tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True)]
    if not parts:
        return []
    return ["", "## Calibration: reliability", "",
            "Observed share of malignant images (and how many images) among those whose predicted probability of "
            "malignant falls in each bin, pooled test folds; a calibrated classifier's share lies inside its bin. "
            "Drawn by dvc plots show (metrics/plots/calibration/).", *parts]


def primary_table(summary: dict, models: list[str]) -> str:
    """SVM minus dense head on per-split ROC-AUC: mean, corrected-t interval, p and Holm p; and the pooled Δ."""
    rows = []
    for dataset, results in summary.items():
        for model in models:
            c = results[model]["svm_minus_dense"][PRIMARY]
            pooled = results[model]["image"].get("svm_minus_dense", {})
            rows.append([dataset, model, f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                         format_p(c["p_value_t"]), format_p(c["p_value_holm"]),
                         f"{value(pooled, 'roc_auc'):+.3f} [{value(pooled, 'roc_auc_ci_low'):+.3f}, "
                         f"{value(pooled, 'roc_auc_ci_high'):+.3f}]"])
    return tabulate(rows, headers=["dataset", "network", "Δ ROC-AUC per split [95 % CI]", "p", "p (Holm)",
                                   "Δ pooled ROC-AUC [bootstrap CI]"], tablefmt="github", disable_numparse=True)


def secondary_table(summary: dict, models: list[str]) -> str:
    """SVM minus dense head on the secondary metrics: mean difference per split [corrected-t CI], unadjusted p."""
    metrics = [m for m in SECONDARY if all(m in r[model]["svm_minus_dense"] for r in summary.values()
                                           for model in models)]
    rows = []
    for dataset, results in summary.items():
        for model in models:
            row = [dataset, model]
            for m in metrics:
                c = results[model]["svm_minus_dense"][m]
                row.append(f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], "
                           f"p {format_p(c['p_value_t'])}")
            rows.append(row)
    return tabulate(rows, headers=["dataset", "network", *(SECONDARY[m] for m in metrics)], tablefmt="github",
                    disable_numparse=True)


def paper_metric_applies(folds: dict, metric: str) -> bool:
    """Whether ``metric`` is one of the paper's tables for this dataset: two classes (which have argmax_
    metrics beside the operating point's) show the argmax ones and ROC-AUC; more classes, the rest."""
    two_classes = "argmax_accuracy" in folds
    return metric in folds and (metric.startswith("argmax_") or metric == "roc_auc" or not two_classes)


def paper_table(summary: dict, metric: str, models: list[str]) -> str | None:
    """The paper's layout: models as rows, dataset x classifier columns, mean ± std over splits, best in bold."""
    datasets = [d for d, r in summary.items() if all(paper_metric_applies(r[m]["folds"]["dense"], metric)
                                                     for m in models)]
    if not datasets:
        return None
    headers = ["model"] + [f"{d} {label}" for d in datasets for label in CLASSIFIER_LABELS.values()]
    def rank(d: str, m: str, c: str) -> float:
        v = value(summary[d][m]["folds"][c], metric)
        return -math.inf if math.isnan(v) else v

    best = {d: max((rank(d, m, c), m, c) for m in models for c in CLASSIFIERS)[1:] for d in datasets}
    rows = []
    for model in models:
        row = [model]
        for dataset in datasets:
            for classifier in CLASSIFIERS:
                f = summary[dataset][model]["folds"][classifier]
                cell = f"{value(f, metric):.3f} ± {value(f, metric + '_std'):.3f}"
                row.append(f"**{cell}**" if best[dataset] == (model, classifier) else cell)
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def training_images_line(summary: dict) -> str:
    """Which images each classifier learned from, so a reader sees whether the comparison is fair."""
    protocols = {m["svm_train_on"] for d in summary.values() for m in d.values()}
    counts = "; ".join(f"{dataset}: dense head {next(iter(r.values()))['n_train']['dense']:.0f}, "
                       f"SVM {next(iter(r.values()))['n_train']['svm']:.0f}" for dataset, r in summary.items())
    if protocols == {"fit"}:
        return (f"Both classifiers learned from the same labelled images in every split (svm.train_on = fit; "
                f"mean per split: {counts}).")
    return (f"The SVM learned from the whole training part, the dense head's early-stopping images included "
            f"(svm.train_on = training): more labelled images than the dense head (mean per split: {counts}).")


def write_error_sheets(settings: Settings) -> list[str]:
    """``metrics/errors/<dataset>/<model>.png`` for every two-class dataset x network; returns the files written."""
    written = []
    with atomic_dir(summary_output.ERRORS_DIR) as folder:
        for dataset in settings.datasets:
            data = prepared.load_prepared(dataset)
            if len(data.class_names) != 2:
                continue
            for model in settings.models:
                predictions = cv_results.load_predictions(dataset, model)
                readings = {c: cv_results.malignant_view(predictions, c, malignant=data.class_names[1])
                            for c in CLASSIFIERS}
                sheet = errors_sheet(readings, data.images, data.manifest["id"].tolist())
                (folder / dataset).mkdir(exist_ok=True)
                cv2.imwrite(str(summary_output.errors_sheet_path(dataset, model, root=folder)), sheet)
                written.append(str(summary_output.errors_sheet_path(dataset, model)))
    return written


def errors_section(sheets: list[str]) -> list[str]:
    """The summary's list of error sheets (none where no dataset has two classes)."""
    if not sheets:
        return []
    return ["", "## Most confident errors", "",
            "Per network, the malignant images of the test folds given the lowest probability of malignant and the "
            "benign ones given the highest, each misread at the operating point, per classifier "
            "(each the error of the split whose test fold held the image; `ultrasound-transfer explain` reads the "
            "ensemble, most of whose splits trained on these images):", "",
            *[f"* `{sheet}`" for sheet in sheets]]


def render_markdown(summary: dict, primary: dict, settings: Settings, *, audits: dict, external: dict,
                    sheets: list[str] = ()) -> str:
    """The whole ``summary.md``."""
    models = list(settings.models)
    parts = ["# Results", "", *run_section(summary, settings), *flow_section(list(summary)), "",
             training_images_line(summary), "", *data_section(summary, settings), *audit_section(audits)]
    for level, title in (("image", "per image"), ("case", "per case")):
        for dataset, results in summary.items():
            if any(results[m].get(level) for m in models):
                parts += ["", f"## {dataset}: {title}", "", headline_table(results, models, level)]
    parts += calibration_section(summary, models)
    parts += reliability_section(summary, models)
    parts += external_section(external, models)
    parts += [
        "", "## Primary comparison: SVM minus dense head, ROC-AUC", "",
        f"Per split (every fold of every repeat), by the corrected repeated k-fold t-test (Bouckaert & Frank 2004; "
        f"the training size is the images a classifier learned from, the smaller where the two differ). "
        f"p (Holm): adjusted over the family of "
        f"{primary['tests_in_family']} tests, every network × dataset in this report. The pooled difference and its "
        "bootstrap interval over groups are beside it.",
        "", primary_table(summary, models), *precision_section(summary, models),
        "", "## Secondary comparisons (not adjusted for multiplicity; descriptive)", "",
        "SVM minus dense head at each classifier's operating point, per split: mean [corrected-t 95 % CI], p.",
        "", secondary_table(summary, models),
        "", "## The paper's tables", "",
        "Argmax reading as in the paper, per image, mean ± sample std over splits; best of each dataset in bold.",
    ]
    for metric, title in PAPER_TABLES.items():
        table = paper_table(summary, metric, models)
        if table:
            parts += ["", f"### {title}", "", table]
    parts += errors_section(list(sheets))
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> None:
    if argv:
        raise PipelineError(f"usage: python -m stages.report (got arguments {argv}).")
    settings = load_settings()
    results = collect(list(settings.datasets), list(settings.models))
    primary = adjust_primary(results)
    audits, external = collect_audits(list(settings.datasets)), collect_external(settings)
    sheets = write_error_sheets(settings)
    markdown = render_markdown(results, primary, settings, audits=audits, external=external, sheets=sheets)
    summary_output.write_summary(markdown=markdown, figures={"primary": primary, "shortcut_audit": audits,
                                                             "external": external, **results})
    print(markdown, flush=True)
    log("report", f"wrote {summary_output.MARKDOWN} and {summary_output.JSON}")


if __name__ == "__main__":
    run_stage(main)
