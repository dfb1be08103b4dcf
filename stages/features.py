"""Stage ``features``: penultimate features of every image under each fold's network.

Usage: ``python -m stages.features DATASET MODEL``.  Reads param ``features.layer``
(``pooled``: the global-average-pooled backbone output; ``head``: the head's
hidden dense layer) and ``finetune`` (for the head's shape).

Output ``data/features/<dataset>/<model>/fold<k>.npz`` with ``features``
(N, D) float32 for *every* image, in manifest order, computed once here and
reused by ``evaluate``.  The SVM of fold k is fitted on the training rows and
scored on the test rows of this array.
"""

from __future__ import annotations

import numpy as np

from ultrasound_transfer.common import PipelineError, Stopwatch, atomic_dir, load_params, log, parse_args, require, run_stage
from ultrasound_transfer.data.prepared import load_prepared, load_test_folds
from ultrasound_transfer.paths import FEATURES_DIR, MODELS_DIR
from ultrasound_transfer.networks.backbones import build_classifier, feature_extractor, to_network_input


def main(argv: list[str]) -> None:
    dataset, model_name = parse_args(argv, ["dataset", "model"], "python -m stages.features DATASET MODEL")
    params = load_params()
    layer, cfg = require(params, "features.layer"), require(params, "finetune")
    data = load_prepared(dataset)
    folds = load_test_folds(dataset, len(data.manifest))
    tag = f"{dataset}/{model_name}"
    clock = Stopwatch()
    # The fold weights replace every weight, so the starting weights do not matter.
    model, _ = build_classifier(model_name, data.images.shape[1], len(data.class_names), "none",
                                cfg["head_units"], cfg["dropout"], 1.0)
    extractor = feature_extractor(model, layer)
    x = to_network_input(data.images, model_name)
    weights_dir = MODELS_DIR / dataset / model_name / "weights"
    with atomic_dir(FEATURES_DIR / dataset / model_name) as out:
        for k in range(1, len(folds) + 1):
            weights = weights_dir / f"fold{k}.weights.h5"
            if not weights.exists():
                raise PipelineError(f"{weights} is missing; run 'dvc repro finetune@{dataset}-{model_name}'.")
            model.load_weights(weights)
            features = extractor.predict(x, batch_size=cfg["batch_size"], verbose=0).astype(np.float32)
            np.savez(out / f"fold{k}.npz", features=features, ids=data.manifest["id"].to_numpy())
            log("features", f"{tag} fold {k}/{len(folds)}: {features.shape[1]} '{layer}' features "
                f"for {len(features)} images ({clock})")


if __name__ == "__main__":
    run_stage(main)
