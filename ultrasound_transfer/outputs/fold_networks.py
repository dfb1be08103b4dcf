"""``finetune``'s fold networks: ``models/<dataset>/<model>/weights/fold<k>.weights.npz``, and how to rebuild them.

A fold file holds only what split k trained, and the fingerprint of the
frozen part it trained on (:mod:`ultrasound_transfer.networks.fold_weights`).
Rebuilding a split's network takes the recipe (``training/network.json``,
:class:`~ultrasound_transfer.outputs.training_record.NetworkRecipe`): the
backbone with the recorded initial weights, seed, ``ft_fraction``, head,
batch-norm mode and precision, whose frozen part must give the recorded
fingerprint, then the fold file, whose SHA-256 must be the recorded one.
Nothing is read from ``params.yaml``.

Keras is imported only by the functions that build networks, so reading
which files exist loads no framework.
"""

from __future__ import annotations

from pathlib import Path

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.outputs.provenance import file_sha256
from ultrasound_transfer.outputs.stages import repro, stage_name
from ultrasound_transfer.outputs.training_record import MODELS_DIR, STAGE, NetworkRecipe


def stage(dataset: str, model: str) -> str:
    return stage_name(STAGE, dataset, model)


def folder(dataset: str, model: str) -> Path:
    return MODELS_DIR / dataset / model / "weights"


def fold_file(dataset: str, model: str, k: int) -> Path:
    return folder(dataset, model) / f"fold{k}.weights.npz"


def check_fold_files(recipe: NetworkRecipe) -> list[Path]:
    """The fold files of every split, each present and the very file the recipe records (by SHA-256)."""
    rerun = repro(stage(recipe.dataset, recipe.model))
    paths = [fold_file(recipe.dataset, recipe.model, k) for k in range(1, recipe.splits + 1)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PipelineError(f"{missing[0]} is missing ({len(missing)} of {len(paths)} fold files); run '{rerun}' "
                            "(or 'dvc checkout' if it ran and the files were removed).")
    for path, expected in zip(paths, recipe.fold_sha256):
        if file_sha256(path) != expected:
            raise PipelineError(f"{path} is not the fold file this study trained (its SHA-256 differs from the "
                                f"one in {path.parent.parent / 'training' / 'network.json'}): it was replaced or "
                                f"changed since. Run '{rerun}' (or 'dvc checkout {path.parent}').")
    return paths


def build_network(recipe: NetworkRecipe):
    """A fresh network of the recipe (frozen part as every split has it; trained part as before training),
    checked against the recorded fingerprint of the frozen part."""
    from ultrasound_transfer.networks.backbones import build_classifier
    from ultrasound_transfer.networks.fold_weights import frozen_fingerprint
    from ultrasound_transfer.networks.runtime import seed_everything, set_precision

    set_precision(recipe.precision)
    seed_everything(recipe.seed, recipe.deterministic_ops)
    network, _ = build_classifier(recipe.model, image_size=recipe.preprocessing.image_size,
                                  n_classes=len(recipe.class_names), weights=recipe.weights,
                                  ft_fraction=recipe.ft_fraction, head=recipe.head, batch_norm=recipe.batch_norm)
    found = frozen_fingerprint(network)
    if found != recipe.frozen_sha256:
        import keras

        raise PipelineError(
            f"{recipe.dataset} x {recipe.model}: the frozen part rebuilt here (fingerprint {found[:12]}, Keras "
            f"{keras.__version__} on {keras.backend.backend()}) is not the one its folds trained on "
            f"({recipe.frozen_sha256[:12]}, Keras {recipe.keras} on {recipe.backend}); the initial weights "
            f"({recipe.weights}), the Keras version or the backend differ. Use what trained it, or run "
            f"'{repro(stage(recipe.dataset, recipe.model))}' to retrain it here.")
    return network


def load_fold(network, recipe: NetworkRecipe, k: int) -> None:
    """Put split ``k``'s trained layers into ``network`` (built by :func:`build_network`)."""
    from ultrasound_transfer.networks.fold_weights import load_fold_weights

    load_fold_weights(network, fold_file(recipe.dataset, recipe.model, k), recipe.frozen_sha256,
                      rerun=repro(stage(recipe.dataset, recipe.model)))
