"""Stage ``external``: the networks of one dataset's folds read on every image of another (external validation).

Usage: ``python -m stages.external TRAIN TEST MODEL``, one stage per entry of
params ``external`` and network.  Reads params ``external``, ``features``,
``ft_fraction``, ``weights``, ``seed`` and what shapes the network in
``finetune``, ``svm`` and ``evaluation``.

Nothing learns from the TEST dataset.  Each split of TRAIN (each fold of each
repeat) is rebuilt from its fold file (the frozen part checked) and run over every TEST image,
giving its dense head's probabilities and its feature layer; the split's SVM,
Platt scaling and both operating points are fitted again exactly as
``evaluate`` fits them, on TRAIN's images (:mod:`ultrasound_transfer.evaluation.classifiers`).
The splits are then averaged into one ensemble per classifier
(:mod:`ultrasound_transfer.evaluation.transfer`).

Outputs in ``metrics/external/<train>-to-<test>/``:

* ``<model>.json`` (DVC metrics): ``image`` (and ``case``, where TEST's cases
  have several images) headline figures of both classifiers on TEST, with
  intervals from a bootstrap over TEST's groups; ``gap``: per classifier the
  source's cross-validated figure, the external one and their difference with
  its interval; ``data``: TEST's counts;
* ``<model>.predictions.csv``: per TEST image its id, true class, group, case
  and per classifier the ensemble's probabilities, threshold and called class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ultrasound_transfer.common import PipelineError, Stopwatch, log, parse_args, run_stage, write_atomic, write_json
from ultrasound_transfer.data.prepared import (
    check_class_names,
    class_names_of,
    dataset_facts,
    load_manifest,
    load_prepared,
)
from ultrasound_transfer.evaluation.cases import case_headline, has_multi_image_cases
from ultrasound_transfer.evaluation.classifiers import SplitReading
from ultrasound_transfer.evaluation.intervals import headline_with_intervals, interval_options, pooled_from_table
from ultrasound_transfer.evaluation.transfer import ensemble_predictions, split_classifiers, transfer_gap
from ultrasound_transfer.networks.backbones import FEATURE_LAYERS, OUTPUT_LAYER, build_classifier
from ultrasound_transfer.networks.feature_extraction import layers_pass
from ultrasound_transfer.networks.fold_weights import frozen_fingerprint, load_fold_weights
from ultrasound_transfer.networks.runtime import seed_everything, set_precision
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.paths import METRICS_DIR, MODELS_DIR, external_pair_dir
from ultrasound_transfer.settings import Settings

CLASSIFIERS = ("dense", "svm")


def check_pair(settings: Settings, train: str, test: str, *, source_classes: list[str],
               target_classes: list[str]) -> None:
    """Refuse a pair that params do not list, or whose datasets' classes differ, before any network is built."""
    if (train, test) not in {(p.train, p.test) for p in settings.external}:
        raise PipelineError(f"{train} -> {test} is not an entry of params external; add "
                            f"{{train: {train}, test: {test}}} there.")
    if len(source_classes) != 2:
        raise PipelineError(f"external {train} -> {test}: {train} has classes {source_classes}; external validation "
                            "reads two classes, benign and malignant (for BUSI, normalize.busi_classes: "
                            "[benign, malignant]).")
    if source_classes != target_classes:
        raise PipelineError(f"external {train} -> {test}: {train} has classes {source_classes} and {test} "
                            f"{target_classes}; the networks can only be read on a dataset of the same classes "
                            "(for BUSI, normalize.busi_classes: [benign, malignant]).")


def check_no_shared_images(train: str, test: str, *, source: pd.DataFrame, target: pd.DataFrame) -> None:
    """Refuse a pair whose datasets hold identical pixels: the networks would be tested on images they learned."""
    shared = target[target["sha256"].isin(set(source["sha256"]))]
    if len(shared):
        raise PipelineError(f"external {train} -> {test}: {len(shared)} image(s) of {test} have the pixels of an "
                            f"image of {train} (e.g. {shared['source'].iloc[0]}), so the networks would be tested on "
                            f"images they learned from; remove them from data/raw/{test} (re-hosted copies of one "
                            "set are common).")


def main(argv: list[str]) -> None:
    train, test, model_name = parse_args(argv, ["train", "test", "model"], "python -m stages.external TRAIN TEST MODEL")
    settings = load_settings()
    cfg = settings.finetune
    target, source = load_prepared(test), load_manifest(train)
    class_names = check_class_names(class_names_of(source))
    check_pair(settings, train, test, source_classes=class_names, target_classes=target.class_names)
    check_no_shared_images(train, test, source=source, target=target.manifest)
    internal_path = METRICS_DIR / train / f"{model_name}.predictions.csv"
    if not internal_path.is_file():
        raise PipelineError(f"{internal_path} is missing; run 'dvc repro evaluate@{train}-{model_name}'.")
    tag = f"{train}->{test}/{model_name}"
    clock = Stopwatch()
    set_precision(cfg.precision)
    seed_everything(settings.seed, cfg.deterministic_ops)
    model, _ = build_classifier(model_name, image_size=target.images.shape[1], n_classes=len(class_names),
                                weights=settings.weights, ft_fraction=settings.ft_fraction, head=cfg.head,
                                batch_norm=cfg.batch_norm)
    frozen = frozen_fingerprint(model)
    weights_dir = MODELS_DIR / train / model_name / "weights"
    readings: dict[str, list[SplitReading]] = {name: [] for name in CLASSIFIERS}
    with layers_pass(model, target.images, layer_names=[FEATURE_LAYERS[settings.feature_layer], OUTPUT_LAYER],
                     model_name=model_name, batch_size=cfg.batch_size, cache=cfg.cache,
                     scratch_dir=MODELS_DIR / train / model_name) as outputs:
        log("external", f"{tag}: frozen prefix over {len(target.images)} {test} images done ({clock})")
        for split in split_classifiers(train, model_name, settings):
            load_fold_weights(model, weights_dir / f"fold{split.k}.weights.npz", frozen,
                              rerun=f"dvc repro finetune@{train}-{model_name}")
            features, probabilities = outputs()
            readings["dense"].append(SplitReading(probabilities, split.dense_threshold, probabilities.argmax(axis=1),
                                                  split.n_fit))
            readings["svm"].append(split.svm.read(features))
            log("external", f"{tag} split {split.k}: read ({clock})")

    labels, groups = target.labels, target.manifest["group"].astype(str).to_numpy()
    external = {name: ensemble_predictions(r, labels=labels, groups=groups) for name, r in readings.items()}
    table = pd.DataFrame({"id": target.manifest["id"], "repeat": 1, "true": labels,
                          "true_class": [class_names[c] for c in labels], "group": groups,
                          "case": target.manifest["case"].astype(str)})
    for name, pooled in external.items():
        for c, class_name in enumerate(class_names):
            table[f"{name}_prob_{class_name}"] = pooled.probabilities[:, c]
        table[f"{name}_threshold"] = pooled.thresholds
        called = pooled.probabilities[:, 1] >= pooled.thresholds
        table[f"{name}_class"] = np.where(called, class_names[1], class_names[0])

    options = interval_options(settings.evaluation, seed=settings.seed)
    internal_table = pd.read_csv(internal_path, dtype={"group": str})
    internal = {name: pooled_from_table(internal_table, name, class_names) for name in CLASSIFIERS}
    metrics = {"train": train, "test": test, "data": dataset_facts(target.manifest, class_names),
               "image": headline_with_intervals(external, **options)}
    if has_multi_image_cases(table["case"].to_numpy()):
        metrics["case"] = case_headline(external, cases=table["case"].to_numpy(),
                                        case_score=settings.evaluation.case_score, options=options)
    metrics |= {"gap": transfer_gap(internal, external, **options), "splits": len(readings["dense"]),
                "operating_point": settings.evaluation.operating_point}
    out = external_pair_dir(train, test)
    write_atomic(out / f"{model_name}.predictions.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_json(out / f"{model_name}.json", metrics)
    gap = metrics["gap"]
    log("external", f"{tag}: ROC-AUC " + ", ".join(
        f"{name} {gap[name]['internal_roc_auc']:.3f} internal -> {gap[name]['external_roc_auc']:.3f} external "
        f"(gap {gap[name]['external_minus_internal_roc_auc']:+.3f} "
        f"[{gap[name]['external_minus_internal_roc_auc_ci_low']:+.3f}, "
        f"{gap[name]['external_minus_internal_roc_auc_ci_high']:+.3f}])" for name in CLASSIFIERS) + f" ({clock})")


if __name__ == "__main__":
    run_stage(main)
