"""Stage ``features``: the SVM's input, a feature layer of every image under each fold's network.

Usage: ``python -m stages.features DATASET MODEL``.  Reads params ``features.layer``
(``pooled``: the global-average-pooled backbone output that feeds the head;
``head``: the head's hidden Dense layer), ``ft_fraction``, ``weights``, ``seed``
and from ``finetune`` what shapes or computes the network (``head_units``, ``head_norm``,
``batch_norm``, ``batch_size``, ``cache_dtype``, ``cache_memory_mb``, ``precision``).

The network is rebuilt from the same starting weights as in ``finetune``, and
each fold's trained layers are loaded over it after checking that the frozen
part is the one they were trained on
(:mod:`ultrasound_transfer.networks.fold_weights`).  The frozen prefix runs
once over all images; each fold runs only its trained tail
(:mod:`ultrasound_transfer.networks.feature_extraction`).

Output ``data/features/<dataset>/<model>/fold<k>.npz`` with ``features``
(N, D) float32 for *every* image, in manifest order, and their ``ids``.  The
SVM of fold k is fitted on that fold's training rows and scored on its test rows.
"""

from __future__ import annotations

import numpy as np

from ultrasound_transfer.common import Stopwatch, atomic_dir, log, parse_args, run_stage
from ultrasound_transfer.data.prepared import load_prepared, load_test_folds
from ultrasound_transfer.networks.backbones import build_classifier
from ultrasound_transfer.networks.feature_extraction import feature_pass
from ultrasound_transfer.networks.fold_weights import frozen_fingerprint, load_fold_weights
from ultrasound_transfer.networks.runtime import seed_everything, set_precision
from ultrasound_transfer.parameters import load_settings
from ultrasound_transfer.paths import FEATURES_DIR, MODELS_DIR


def main(argv: list[str]) -> None:
    dataset, model_name = parse_args(argv, ["dataset", "model"], "python -m stages.features DATASET MODEL")
    settings = load_settings()
    layer, cfg, seed = settings.feature_layer, settings.finetune, settings.seed
    data = load_prepared(dataset)
    folds = load_test_folds(dataset, len(data.manifest))
    tag = f"{dataset}/{model_name}"
    clock = Stopwatch()
    # Built as finetune builds it, so that the frozen part (random or loaded) is the same, in the same precision.
    set_precision(cfg.precision)
    seed_everything(seed, cfg.deterministic_ops)
    model, _ = build_classifier(model_name, image_size=data.images.shape[1], n_classes=len(data.class_names),
                                weights=settings.weights, ft_fraction=settings.ft_fraction, head=cfg.head,
                                batch_norm=cfg.batch_norm)
    frozen = frozen_fingerprint(model)
    weights_dir = MODELS_DIR / dataset / model_name / "weights"
    with feature_pass(model, data.images, layer=layer, model_name=model_name, batch_size=cfg.batch_size,
                      cache=cfg.cache, scratch_dir=MODELS_DIR / dataset / model_name) as features_now, \
            atomic_dir(FEATURES_DIR / dataset / model_name) as out:
        log("features", f"{tag}: frozen prefix done ({clock})")
        for k in range(1, len(folds) + 1):
            load_fold_weights(model, weights_dir / f"fold{k}.weights.npz", frozen,
                              rerun=f"dvc repro finetune@{dataset}-{model_name}")
            features = features_now()
            np.savez(out / f"fold{k}.npz", features=features, ids=data.manifest["id"].to_numpy())
            log("features", f"{tag} fold {k}/{len(folds)}: {features.shape[1]} '{layer}' features "
                f"for {len(features)} images ({clock})")


if __name__ == "__main__":
    run_stage(main)
