"""The model card beside an export (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019).

Its sections follow Mitchell et al. and what radiology reviewers ask of a
model put before new scans (the CLAIM checklist, Mongan et al., Radiology: AI
2020): what the model is, what it may and may not be used for, the data it
learned from and how the folds kept patients apart, its cross-validated (and,
where run, external) figures with intervals over groups, its operating point
and calibration, and what is known to limit it.  Every figure is read from
the pipeline's own metrics files, and every fact of the model from the
trained study itself (its recipe and classifiers,
:mod:`ultrasound_transfer.outputs.trained_study`), never from today's
``params.yaml``; nothing is typed in by hand.
"""

from __future__ import annotations

from ultrasound_transfer.choices import CLASSIFIERS, GROUPING_MEANS
from ultrasound_transfer.data.reference_standards import REFERENCE_STANDARDS
from ultrasound_transfer.deployment.trained import TrainedNetwork
from ultrasound_transfer.evaluation.novelty import NOVELTY_QUANTILE
from ultrasound_transfer.outputs.trained_study import recorded_params

CLASSIFIER_NAMES = {"dense": "dense softmax head", "svm": "linear SVM on the network's features"}
HEADLINE = (("roc_auc", "ROC-AUC"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
            ("ppv", "PPV"), ("npv", "NPV"), ("brier", "Brier score"), ("ece", "expected calibration error"))


def figure(section: dict, key: str) -> str:
    """``value [low, high]`` of one metric, ``—`` where the metrics file lacks it."""
    value, low, high = section.get(key), section.get(f"{key}_ci_low"), section.get(f"{key}_ci_high")
    if value is None:
        return "—"
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def metrics_table(level: dict) -> list[str]:
    """Markdown rows of the headline figures, one column per classifier."""
    lines = ["| figure | " + " | ".join(CLASSIFIER_NAMES[c] for c in CLASSIFIERS) + " |",
             "|---|" + "---|" * len(CLASSIFIERS)]
    for key, name in HEADLINE:
        lines.append(f"| {name} | " + " | ".join(figure(level.get(c, {}), key) for c in CLASSIFIERS) + " |")
    return lines


def limits(trained: TrainedNetwork) -> list[str]:
    """The known limits that apply to this network: demo weights, synthetic or TI-RADS labels, scope."""
    recipe = trained.study.recipe
    grouping = recipe.folds.get("grouping", "near")
    found = []
    if str(recipe.weights).lower() == "none":
        found.append("**Random initial weights** (`weights: none`): this is the offline demo's network, not a "
                     "transfer-learned one; its figures show that the pipeline runs, not that it reads ultrasound.")
    if trained.dataset.startswith("phantom"):
        found.append("**Synthetic training data**: it has never seen a real scan.")
    if trained.dataset == "ddti":
        found.append("**Labels are TI-RADS categories, not pathology**: agreement with biopsy is not measured.")
    found += [
        "One dataset from one source: figures on other scanners, sites and populations may be lower; "
        "see the external figures where they exist, and validate on your own scans first.",
        f"The network reads a {trained.image_size} x {trained.image_size} gray square made by `{trained.resize}`; "
        "colour Doppler, elastography, other organs and other image types were never in its training data. "
        "A frame unlike its training images (blank, or with a novelty above the study's threshold) is flagged "
        "by `predict`, not refused; a frame that resembles them can still be misread.",
        "The cross-validated figures are those of single split networks, each read on its test fold"
        + (" (with `cv.grouping: none`, a fold may share patients with the training part). " if
           grouping == "none" else ", patients it never saw. ") +
        "The ensemble that the files hold averages them; it has no cross-validated figure of its own (every "
        "image trained some of its members), so only the external figures, where run, measure it. The "
        "operating point is the mean of the splits' thresholds, never tuned on the test folds.",
        "Grad-CAM maps (ultrasound-transfer explain) show where the score rises, at the coarse resolution of "
        "the last convolutional block; they are not a segmentation and not proof that the lesion was read.",
    ]
    return found


def model_card(trained: TrainedNetwork, *, internal: dict, external: dict[str, dict], files: dict[str, str],
               experiment: str | None) -> str:
    """The card as Markdown, from the trained study and its metrics files."""
    recipe, fitted = trained.study.recipe, trained.study.classifiers
    params = recorded_params(trained.study)
    evaluation, finetune, cv = params.get("evaluation", {}), params.get("finetune", {}), recipe.folds
    grouping = cv.get("grouping", "near")
    weights_detail = (f" (SHA-256 `{recipe.weights_sha256[:16]}`, input preprocessing `{recipe.input_preprocessing}`)"
                      if recipe.weights_sha256 else "")
    partition = ("cross-validation on the dataset's official patient-level partition"
                 if params.get("cv", {}).get("folds") == "official" else "stratified cross-validation")
    benign, malignant = trained.class_names
    data = internal.get("data", {})
    rule = fitted.operating_point
    lines = [
        f"# Model card: {trained.model_name} on {trained.dataset}",
        "",
        "## Model",
        "",
        f"* **What**: {trained.model_name} (keras.applications) fine-tuned to tell {malignant} (the positive "
        f"class) from {benign}, as in Bal-Ghaoui et al., IAPGOS 13(4), 2023; two classifiers on it: the "
        "network's dense softmax head and a linear SVM on its features.",
        f"* **The files** ({', '.join(files.values())}): the ensemble of the study's {len(trained.splits)} "
        "split networks (every fold of every repeat); its probability of malignant is the mean of theirs.",
        f"* **Strategy**: `ft_fraction` {recipe.ft_fraction:g} (the last {internal.get('layers_trained', '?')} of "
        f"{internal.get('layers_total', '?')} weight-carrying layers trained, "
        f"{100 * internal.get('trained_share', 0):.1f} % of the backbone's parameters); initial weights "
        f"`{recipe.weights}`{weights_detail}; input {trained.image_size} px; up to {finetune.get('epochs', '?')} "
        f"epochs with early stopping; SVM input: `{fitted.feature_layer}` features; seed {recipe.seed}.",
        f"* **Provenance**: {'experiment `' + experiment + '`' if experiment else 'the workspace'}; trained at code "
        f"revision `{recipe.provenance.get('code_revision', 'unknown')}` with Keras {recipe.keras} on "
        f"{recipe.backend}; frozen part fingerprint `{recipe.frozen_sha256[:16]}`.",
        "",
        "## Intended use",
        "",
        "Research on ultrasound image classification: to reproduce, extend or compare the study, and to see how "
        "a trained network reads new scans. It is **not a medical device** and must not decide or delay care; "
        "a prediction is a research reading of one frame, not a diagnosis.",
        "",
        "## Training data and folds",
        "",
        f"* **Data**: {REFERENCE_STANDARDS.get(trained.dataset, trained.dataset)}.",
        f"* **Counts**: {data.get('images', '?')} images ({data.get(f'images_{benign}', '?')} {benign}, "
        f"{data.get(f'images_{malignant}', '?')} {malignant}) of {data.get('groups', '?')} groups and "
        f"{data.get('cases', '?')} cases.",
        f"* **Folds**: {cv.get('n_splits', '?')}-fold {partition}, grouping `{grouping}` "
        f"({GROUPING_MEANS.get(grouping, grouping)}), {cv.get('repeats', '?')} repeat(s), seed "
        f"{cv.get('seed', '?')}. Early stopping, the SVM's C, Platt scaling and the operating points were chosen "
        "inside each training part.",
        "",
        "## Cross-validated figures (image level, pooled out-of-fold)",
        "",
        "Per image, as `predict` reads one frame at a time; at the operating point; "
        f"{100 * evaluation.get('confidence_level', 0.95):g} % intervals from "
        f"{evaluation.get('bootstrap_resamples', '?')} bootstrap "
        + ("resamples of groups, never of single images." if grouping != "none" else
           "resamples of images (`cv.grouping: none` makes each image its own group), too narrow where a patient "
           "has several images."),
        "",
        *metrics_table(internal.get("image", {})),
        "",
    ]
    if "case" in internal:
        case_thresholds = fitted.case_thresholds
        lines += ["### Case level", "",
                  f"Per case (the {evaluation.get('case_score', 'mean')} of its images' probabilities, params "
                  "`evaluation.case_score`; a case counted once with its near-copies), as a reader who sees every "
                  "image of a lesion decides, read at a case-level operating point chosen on validation cases. "
                  "`predict` gives frames: combine a case's rows the same way and read the result at "
                  + ", ".join(f"{case_thresholds[c]:.4f} ({CLASSIFIER_NAMES[c]})" for c in CLASSIFIERS)
                  + " to use these figures.", "", *metrics_table(internal["case"]), ""]
    for test, metrics in external.items():
        lines += [f"## External figures: read on {test}", "",
                  "Nothing was trained or tuned on these images.", "", *metrics_table(metrics.get("image", {})), ""]
    if not external:
        lines += ["## External figures", "", "None were run for this network (params `external`); its figures "
                  "on another site are unknown.", ""]
    lines += [
        "## Operating point and calibration",
        "",
        f"* **Rule**: `{rule}`" + (f" (target {fitted.target:g})" if rule in ("sensitivity", "specificity") else "")
        + ", chosen per split on its inner validation images; the ensemble uses the mean of the splits' thresholds.",
        *[f"* **{CLASSIFIER_NAMES[c]}**: {malignant} when p({malignant}) ≥ {trained.thresholds[c]:.4f}"
          for c in CLASSIFIERS],
        "* **Calibration**: the Brier score and expected calibration error above; "
        + ("both classifiers' probabilities are Platt-scaled on each split's validation images (the dense head's "
           "log-odds, the SVM's decision value), so they are read alike. " if fitted.dense_calibrated else
           "the SVM's probabilities are Platt-scaled on validation images, the dense head's are its softmax as "
           "trained (`evaluation.dense_calibration: none`). ")
        + "Check calibration on your own scans before reading a probability as a risk.",
        f"* **Frames unlike the training images**: output `novelty` (1 is a typical held-out study image); a frame "
        f"above {trained.novelty_threshold:.2f} ({NOVELTY_QUANTILE:.0%} of the study's held-out images stay under "
        "it, each read by the split that held it out; the mean over splits is flagged at most as often as some "
        "split's novelty exceeds it), or a blank one, is flagged by `predict`; do not rely on its call.",
        "",
        "## Known limits",
        "",
        *[f"* {item}" for item in limits(trained)],
        "",
        "## How to use the files",
        "",
        f"Decode the frame to gray, square it to {trained.image_size} px by `{trained.resize}`, and feed "
        f"`(N, {trained.image_size}, {trained.image_size})` float32 gray levels 0..255 as input `gray`; outputs "
        "`dense` and `svm` are the probabilities of malignant, `novelty` how unlike the study's images the frame "
        "is. `export.json` holds the same facts for a program; docs/using-the-model.md shows the code.",
        "",
    ]
    return "\n".join(lines)
