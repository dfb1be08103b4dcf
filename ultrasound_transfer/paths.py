"""The pipeline's folders, relative to the repository root (DVC runs every stage there).

Each stage writes below one of these; ``dvc.yaml`` names the same paths.
"""

from pathlib import Path

PARAMS_CHECK = Path("data/params_checked.json")   # check_params: written when params.yaml passes
RAW_DIR = Path("data/raw")                # download: images + labels.csv per dataset
PREPARED_DIR = Path("data/prepared")      # normalize: images.npy, manifest.csv, report.json
FOLDS_DIR = Path("data/folds")            # folds: <dataset>.json
FEATURES_DIR = Path("data/features")      # features: <dataset>/<model>/fold<k>.npz
MODELS_DIR = Path("models")               # finetune: <dataset>/<model>/{weights,training}
BACKBONES_DIR = Path("models/backbones")   # backbone weight files the user provides (a dep of finetune)
METRICS_DIR = Path("metrics/cv")          # evaluate: <dataset>/<model>.json, .folds.csv, .predictions.csv
EXTERNAL_DIR = Path("metrics/external")   # external: <train>-to-<test>/<model>.json, .predictions.csv


def external_pair_dir(train: str, test: str) -> Path:
    """Where the external stage writes the networks of ``train`` read on ``test``."""
    return EXTERNAL_DIR / f"{train}-to-{test}"
PLOTS_DIR = Path("metrics/plots")         # finetune, evaluate: data for dvc plots
SUMMARY_DIR = Path("metrics")             # report: summary.json, summary.md
ERRORS_DIR = Path("metrics/errors")       # report: <dataset>/<model>.png, the most confident errors
