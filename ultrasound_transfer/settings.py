"""The parameters as typed settings: one frozen dataclass per section of ``params.yaml``.

Every stage builds :class:`Settings` once, with
:func:`ultrasound_transfer.parameters.load_settings`, from a ``params.yaml``
that :func:`~ultrasound_transfer.parameters.check_params` has passed, and
hands the sections on to the library.  So the library never
reads a dict by key, every value has a type and a name, and an invalid value
cannot reach it: the schema refused it first.  What each parameter means is
said once, in ``params.yaml``'s comments, from which the docs' parameter
reference is generated (:func:`ultrasound_transfer.parameters.reference_markdown`).

The sections map one to one, with these exceptions for readability: the
head's ``finetune.head_units``, ``dropout`` and ``head_norm`` form
:class:`HeadSettings`; ``finetune.frozen_prefix_cache``, ``cache_dtype`` and
``cache_memory_mb`` form :class:`PrefixCacheSettings`; ``download`` becomes
``phantoms`` and ``sources``; and ``features.layer`` is ``feature_layer``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ultrasound_transfer.backbone_weights import weights_by_model
from ultrasound_transfer.choices import MODELS, PHANTOMS


@dataclass(frozen=True)
class PhantomSettings:
    """``download.phantom`` (or ``phantom_site_b``): a built-in dataset (:mod:`ultrasound_transfer.data.phantom`);
    defaults for tests."""

    count: int = 160
    malignant_fraction: float = 0.5
    images_per_patient: int = 4
    difficulty: float = 0.6
    native_size: int = 128
    near_copies: int = 0
    seed: int = 7
    gain_db: float = 0.0
    speckle_scale: float = 1.0
    depth: float = 1.0
    overlay: str = "none"
    size_shortcut: float = 0.0
    caliper_shortcut: float = 0.0


@dataclass(frozen=True)
class SourceSettings:
    """``download.<dataset>``: where a real dataset's archive comes from (None: placed by hand, not checked), and
    for a dataset of one's own its layout (:data:`~ultrasound_transfer.choices.DATASET_LAYOUTS`; None for a
    built-in dataset, read in its published layout)."""

    url: str | None = None
    sha256: str | None = None
    layout: str | None = None
    reference_standard: str | None = None   # a dataset of one's own: what decided its labels (biopsy, ...)


@dataclass(frozen=True)
class NormalizeSettings:
    """``normalize``: decoding, exclusions and near-duplicate grouping at import."""

    busi_classes: tuple[str, ...]
    on_undecodable: str
    near_duplicate_bits: int
    near_duplicate_cross_label: str
    resize: str = "letterbox"
    shortcut_warning_auc: float = 0.7
    busi_normal_as_benign: bool = False


@dataclass(frozen=True)
class CvSettings:
    """``cv``: the outer folds."""

    n_splits: int
    grouping: str
    repeats: int = 1
    folds: str = "seeded"


@dataclass(frozen=True)
class HeadSettings:
    """The classification head: ``finetune.head_units``, ``finetune.dropout``, ``finetune.head_norm``."""

    units: int
    dropout: float
    norm: str = "none"


@dataclass(frozen=True)
class PrefixCacheSettings:
    """``finetune.frozen_prefix_cache``, ``cache_dtype``, ``cache_memory_mb``: the frozen part run once."""

    enabled: bool = True
    dtype: str = "float32"
    memory_mb: float = 2048


@dataclass(frozen=True)
class AugmentationSettings:
    """``finetune.augmentation`` when enabled: the strength of each random change; 0 switches one off."""

    flip: float         # probability of a horizontal flip
    rotate_deg: float   # rotation drawn from [-rotate_deg, rotate_deg]
    shift: float        # translation, fraction of the side, per axis
    scale: float        # zoom factor drawn from [1 - scale, 1 + scale]
    gain: float         # brightness factor drawn from [1 - gain, 1 + gain]
    speckle: float      # relative standard deviation of the multiplicative noise


@dataclass(frozen=True)
class FinetuneSettings:
    """``finetune``: how each fold's network is trained."""

    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    backbone_lr_factor: float
    head: HeadSettings
    validation_fraction: float
    patience: int
    class_weight: str
    batch_norm: str
    deterministic_ops: bool
    cache: PrefixCacheSettings
    precision: str
    jit_compile: str | bool
    data_parallel: bool
    augmentation: AugmentationSettings | None     # None: off


@dataclass(frozen=True)
class SvmSettings:
    """``svm``: the linear SVM on each fold's features."""

    train_on: str
    C: float
    C_grid: tuple[float, ...]
    inner_folds: int
    C_selection: str = "validation"


@dataclass(frozen=True)
class EvaluationSettings:
    """``evaluation``: operating points, intervals, calibration and case-level scores."""

    operating_point: str = "youden"
    target: float = 0.9
    dense_calibration: str = "platt"
    bootstrap_resamples: int = 2000
    confidence_level: float = 0.95
    calibration_bins: int = 10
    case_score: str = "mean"


@dataclass(frozen=True)
class ExternalPair:
    """One entry of ``external``: the networks trained on ``train``'s folds, read on every image of ``test``."""

    train: str
    test: str


@dataclass(frozen=True)
class Settings:
    """All of ``params.yaml``, checked and typed."""

    datasets: tuple[str, ...]
    models: tuple[str, ...]
    ft_fraction: float
    weights: dict[str, str]                  # each network's initial weights (imagenet, none, or a file)
    image_size: int
    seed: int
    phantoms: dict[str, PhantomSettings]      # download.phantom, download.phantom_site_b
    sources: dict[str, SourceSettings]
    normalize: NormalizeSettings
    cv: CvSettings
    finetune: FinetuneSettings
    feature_layer: str
    svm: SvmSettings
    evaluation: EvaluationSettings
    external: tuple[ExternalPair, ...] = ()


def finetune_settings(section: dict) -> FinetuneSettings:
    """``finetune`` of checked params as :class:`FinetuneSettings`."""
    augmentation = section["augmentation"]
    return FinetuneSettings(
        epochs=section["epochs"], batch_size=section["batch_size"], optimizer=section["optimizer"],
        learning_rate=float(section["learning_rate"]), backbone_lr_factor=float(section["backbone_lr_factor"]),
        head=HeadSettings(units=section["head_units"], dropout=float(section["dropout"]), norm=section["head_norm"]),
        validation_fraction=float(section["validation_fraction"]), patience=section["patience"],
        class_weight=section["class_weight"], batch_norm=section["batch_norm"],
        deterministic_ops=section["deterministic_ops"],
        cache=PrefixCacheSettings(enabled=section["frozen_prefix_cache"], dtype=section["cache_dtype"],
                                  memory_mb=section["cache_memory_mb"]),
        precision=section["precision"], jit_compile=section["jit_compile"], data_parallel=section["data_parallel"],
        augmentation=AugmentationSettings(**{key: float(value) for key, value in augmentation.items()
                                             if key != "enabled"}) if augmentation["enabled"] else None,
    )


def settings_from_params(params: dict) -> Settings:
    """:class:`Settings` of a params dict that :func:`~ultrasound_transfer.parameters.check_params` passed."""
    download = params["download"]
    svm = params["svm"]
    return Settings(
        datasets=tuple(params["datasets"]), models=tuple(params["models"]),
        ft_fraction=float(params["ft_fraction"]), weights=weights_by_model(params["weights"], MODELS),
        image_size=params["image_size"],
        seed=params["seed"],
        phantoms={name: PhantomSettings(**section) for name, section in download.items() if name in PHANTOMS},
        sources={name: SourceSettings(**(section or {})) for name, section in download.items()
                 if name not in PHANTOMS},
        normalize=NormalizeSettings(**{**params["normalize"],
                                       "busi_classes": tuple(params["normalize"]["busi_classes"])}),
        cv=CvSettings(**params["cv"]),
        finetune=finetune_settings(params["finetune"]),
        feature_layer=params["features"]["layer"],
        svm=SvmSettings(train_on=svm["train_on"], C=float(svm["C"]), C_grid=tuple(float(c) for c in svm["C_grid"]),
                        inner_folds=svm["inner_folds"], C_selection=svm["C_selection"]),
        evaluation=EvaluationSettings(**params["evaluation"]),
        external=tuple(ExternalPair(**pair) for pair in params["external"]),
    )
