"""The shortcut audit: how well the label can be told from things that are not the lesion.

On public ultrasound sets, how an image was saved can be tied to its label:
suspicious lesions are measured (calipers), zoomed or saved by another
machine, so native size, aspect ratio, gray level and burned-in overlays may
predict malignancy by themselves, and a network can learn them instead of the
lesion (shortcut learning: Geirhos et al., Nature Machine Intelligence 2,
2020; in medical images, DeGrave et al., Nature Machine Intelligence 3, 2021).
``normalize`` runs this audit on every dataset and warns when such a
shortcut is strong.

The features of each image (columns of ``normalize``'s manifest):

* of the file, which the network sees only indirectly: ``native_width``,
  ``native_height``, ``native_aspect`` (width / height);
* of what reaches the network: ``padding_share`` (the share of the square that
  is padding: under letterboxing it shows the native aspect ratio, under
  ``crop`` and ``stretch`` it is 0), ``mean_gray`` of the square,
  ``bright_share``, the share of pixels at gray level 250 or more in the part
  of the frame the square keeps (counted at native resolution, where text,
  calipers and markers are drawn white; a proxy, since bright tissue counts
  too), and ``colour_share``, the share of the frame's pixels in colour
  (channels spread by at least 48 of 255: yellow or green calipers, coloured
  text, Doppler boxes, which turn to mid-gray, 226 for pure yellow, and hide
  from the bright share).

Beside the features' models, the native size as a category: scanners and
their presets save fixed sizes, so a size shared by several images is one
indicator feature (``size_presets``), which a linear model on width and
height would miss when the sizes are not ordered by the label.

Each feature's own ROC-AUC is reported (the raw value as the score, so below
0.5 means lower in malignant images), and two models are fitted: a
standardized logistic regression on all features and one on the visible ones
only, each read by out-of-fold ROC-AUC over a grouped, stratified
cross-validation (the groups of ``normalize``: patients, cases, duplicates),
with a percentile interval from a bootstrap over those groups
(:mod:`ultrasound_transfer.evaluation.intervals`).  The positive class is
malignant; for BUSI with ``normal``, malignant against the rest.  The folds
and resamples are seeded by fixed constants, so the audit depends on the
images only.

A model warns when its ROC-AUC reaches ``normalize.shortcut_warning_auc``, or
when its interval's lower bound clears chance by :data:`CLEAR_OF_CHANCE`: a
point estimate below the warning level whose interval excludes 0.5 by that
margin is a shortcut too, only a weaker one.

What it cannot see: the gray level of the tissue around the lesion apart
from the lesion's own (``mean_gray`` covers both; where masks exist, as in
BUSI, they are not read yet), text-like strokes that are neither bright nor
coloured, and what the trained networks themselves attend to.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ultrasound_transfer.data.grouping import fewest_groups_per_class
from ultrasound_transfer.evaluation.intervals import binary_auc, bootstrap_figures

FILE_FEATURES = ("native_width", "native_height", "native_aspect")
VISIBLE_FEATURES = ("padding_share", "mean_gray", "bright_share", "colour_share")
# A model's interval lower bound this far above 0.5 raises a warning whatever its point estimate.
CLEAR_OF_CHANCE = 0.05
# A native size shared by at least this many images is a preset (one indicator feature).
PRESET_IMAGES = 2
AUDIT_FOLDS = 5          # at most; fewer when a class has fewer groups
AUDIT_RESAMPLES = 1000
AUDIT_SEED = 0
AUDIT_LEVEL = 0.95


def audit_features(manifest: pd.DataFrame) -> pd.DataFrame:
    """The audited features of every image, from ``normalize``'s manifest (a manifest written before a feature
    existed has it as 0)."""
    return pd.DataFrame({
        "native_width": manifest["width"].astype(float), "native_height": manifest["height"].astype(float),
        "native_aspect": manifest["width"] / manifest["height"],
        **{name: manifest[name].astype(float) if name in manifest else 0.0 for name in VISIBLE_FEATURES},
    })


def size_presets(manifest: pd.DataFrame) -> pd.DataFrame:
    """One indicator column per native size (width x height) that at least :data:`PRESET_IMAGES` images share."""
    sizes = manifest["width"].astype(str) + "x" + manifest["height"].astype(str)
    counts = sizes.value_counts()
    return pd.DataFrame({f"size_{size}": (sizes == size).astype(float)
                         for size in sorted(counts[counts >= PRESET_IMAGES].index)}, index=manifest.index)


def out_of_fold_scores(features: np.ndarray, malignant: np.ndarray, groups: np.ndarray, folds: int) -> np.ndarray:
    """Probability of malignant of every image from a logistic model that never saw its group."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=AUDIT_SEED)
    return cross_val_predict(model, features, malignant, groups=groups, cv=split, method="predict_proba")[:, 1]


def audit_model(table: pd.DataFrame, columns: tuple[str, ...], malignant: np.ndarray, groups: np.ndarray,
                folds: int) -> dict:
    """Out-of-fold ROC-AUC, with its interval over groups, of the logistic model on ``columns``."""
    scores = out_of_fold_scores(table[list(columns)].to_numpy(), malignant, groups, folds)
    auc = binary_auc(malignant, scores)
    low, high = bootstrap_figures(lambda rows: {"auc": binary_auc(malignant[rows], scores[rows])}, groups,
                                  resamples=AUDIT_RESAMPLES, level=AUDIT_LEVEL, seed=AUDIT_SEED)["auc"]
    return {"roc_auc": auc, "roc_auc_ci_low": low, "roc_auc_ci_high": high, "features": list(columns)}


def shortcut_audit(manifest: pd.DataFrame, *, warning_auc: float) -> dict:
    """The audit of one prepared dataset: per-feature AUCs, the two models, and the warnings it raises."""
    malignant = (manifest["class_name"] == "malignant").to_numpy().astype(int)
    groups = manifest["group"].astype(str).to_numpy()
    table = audit_features(manifest)
    result = {"positive_class": "malignant", "warning_auc": warning_auc,
              "features": {name: binary_auc(malignant, table[name].to_numpy()) for name in table.columns}}
    _, fewest = fewest_groups_per_class(malignant, groups)
    folds = min(AUDIT_FOLDS, fewest)
    if folds < 2:
        return {**result, "folds": folds, "models": {}, "warnings": [],
                "skipped": f"a class has {fewest} group(s); the audit's grouped cross-validation needs 2"}
    split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=AUDIT_SEED)
    if any(len(np.unique(malignant[train])) < 2 for train, _ in split.split(table, malignant, groups)):
        # Few groups, some holding both classes (a patient with a benign and a malignant lesion).
        return {**result, "folds": folds, "models": {}, "warnings": [],
                "skipped": "a grouped fold's training part holds one class only; too few groups to audit"}
    models = {"all_features": audit_model(table, FILE_FEATURES + VISIBLE_FEATURES, malignant, groups, folds),
              "visible_features": audit_model(table, VISIBLE_FEATURES, malignant, groups, folds)}
    presets = size_presets(manifest)
    if presets.shape[1] >= 2:          # one size for every image tells nothing
        models["size_presets"] = audit_model(presets, tuple(presets.columns), malignant, groups, folds)
    warnings = [
        f"the label is predicted with ROC-AUC {m['roc_auc']:.2f} [{m['roc_auc_ci_low']:.2f}, "
        f"{m['roc_auc_ci_high']:.2f}] from {name.replace('_', ' ')} ({', '.join(strongest(result['features'], m))}), "
        f"not the lesion; a network may learn that shortcut (docs/datasets.md, 'Shortcut audit')"
        for name, m in models.items() if raises_warning(m, warning_auc)
    ]
    return {**result, "folds": folds, "models": models, "warnings": warnings}


def raises_warning(model: dict, warning_auc: float) -> bool:
    """Whether a model's ROC-AUC reaches the warning level, or its interval clears chance by the margin."""
    return model["roc_auc"] >= warning_auc or model["roc_auc_ci_low"] >= 0.5 + CLEAR_OF_CHANCE


def strongest(per_feature: dict[str, float], model: dict, n: int = 2) -> list[str]:
    """The ``n`` features of ``model`` farthest from chance on their own, with their AUCs (a preset model: its
    number of sizes)."""
    named = [name for name in model["features"] if name in per_feature]
    if not named:
        return [f"{len(model['features'])} native sizes as categories"]
    ranked = sorted(named, key=lambda name: -abs(per_feature[name] - 0.5))
    return [f"{name} AUC {per_feature[name]:.2f}" for name in ranked[:n]]
