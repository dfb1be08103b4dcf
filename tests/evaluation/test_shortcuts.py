"""The shortcut audit: a planted non-lesion cue is found, chance stays below the warning, groups stay whole."""

import numpy as np
import pandas as pd

from ultrasound_transfer.evaluation.shortcuts import shortcut_audit

RNG = np.random.default_rng(3)


def manifest(n_patients=40, views=3, *, width_of=lambda label: 400, bright_of=lambda label: 0.0):
    labels = np.repeat(np.arange(n_patients) % 2, views)
    return pd.DataFrame({
        "class_name": np.where(labels == 1, "malignant", "benign"),
        "group": np.repeat([f"p{i}" for i in range(n_patients)], views),
        "height": 300, "width": [width_of(label) for label in labels],
        "padding_share": RNG.uniform(0.2, 0.3, len(labels)), "mean_gray": RNG.normal(100, 5, len(labels)),
        "bright_share": [bright_of(label) + RNG.uniform(0, 1e-3) for label in labels],
    })


def test_a_planted_size_shortcut_is_found_and_warned_about_but_not_as_visible():
    audit = shortcut_audit(manifest(width_of=lambda label: 400 + 100 * label), warning_auc=0.7)
    assert audit["features"]["native_width"] == 1.0 and audit["models"]["all_features"]["roc_auc"] > 0.95
    assert audit["models"]["visible_features"]["roc_auc"] < 0.7      # here the padding does not follow the width
    assert len(audit["warnings"]) == 2 and "native_width AUC 1.00" in audit["warnings"][0]
    assert "2 native sizes as categories" in audit["warnings"][1]        # two sizes: two presets


def test_an_overlay_shortcut_is_seen_by_the_visible_model_too():
    audit = shortcut_audit(manifest(bright_of=lambda label: 0.004 * label), warning_auc=0.7)
    assert audit["models"]["visible_features"]["roc_auc"] > 0.95 and len(audit["warnings"]) == 2


def test_no_cue_stays_near_chance_without_a_warning():
    audit = shortcut_audit(manifest(), warning_auc=0.7)
    for model in audit["models"].values():
        assert model["roc_auc_ci_low"] < 0.5 < model["roc_auc_ci_high"] and model["roc_auc"] < 0.7
    assert audit["warnings"] == []


def test_views_of_one_patient_never_straddle_the_audits_folds():
    """A cue that identifies each patient, not the class, would score by memorizing patients if views
    of one patient could be in both the fitting and the scored part."""
    table = manifest(n_patients=30, views=4)
    patient_cue = table["group"].str[1:].astype(int).map(lambda p: RNG.normal(0, 1)).to_numpy()
    table["mean_gray"] = patient_cue
    audit = shortcut_audit(table, warning_auc=0.7)
    assert audit["models"]["visible_features"]["roc_auc"] < 0.7


def test_too_few_groups_skip_the_models_and_say_why():
    audit = shortcut_audit(manifest(n_patients=2), warning_auc=0.7)
    assert audit["models"] == {} and "needs 2" in audit["skipped"]


def test_an_interval_clear_of_chance_warns_below_the_warning_level():
    """A weaker cue: its point estimate under 0.7, its interval's lower bound over 0.55 (CLEAR_OF_CHANCE)."""
    weak = manifest(n_patients=200)
    weak["bright_share"] = [0.0002 * (c == "malignant") + v for c, v in zip(weak["class_name"],
                                                                             RNG.uniform(0, 1e-3, len(weak)))]
    audit = shortcut_audit(weak, warning_auc=0.9)
    visible = audit["models"]["visible_features"]
    assert visible["roc_auc"] < 0.9 and visible["roc_auc_ci_low"] > 0.55
    assert any("visible features" in warning for warning in audit["warnings"])


def test_native_sizes_as_categories_catch_presets_that_no_line_in_width_separates():
    """Malignant images at the middle of three sizes: a linear model on width cannot separate them, the
    presets' indicators can."""
    audit = shortcut_audit(manifest(width_of=lambda label: 500 if label else 400 + 200 * RNG.integers(0, 2)),
                           warning_auc=0.8)
    assert audit["models"]["size_presets"]["roc_auc"] > 0.95
    assert audit["models"]["all_features"]["roc_auc"] < audit["models"]["size_presets"]["roc_auc"]
