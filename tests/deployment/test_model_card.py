"""The model card's fixed text (the whole card is checked on a trained study in test_commands)."""

from ultrasound_transfer.deployment.model_card import figure


def test_a_figure_carries_its_interval_and_a_missing_one_says_so():
    section = {"roc_auc": 0.8123, "roc_auc_ci_low": 0.7, "roc_auc_ci_high": 0.9, "brier": 0.2}
    assert figure(section, "roc_auc") == "0.812 [0.700, 0.900]"
    assert figure(section, "brier") == "0.200" and figure(section, "ece") == "—"
