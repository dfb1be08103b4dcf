"""Every parameter of ``params.yaml`` checked at once, before any work.

A mistyped parameter found after the data stages ran and a network was built
costs minutes; found after a night-long GPU run, a night.  :func:`check_params`
checks every key of ``params.yaml`` for presence, type, range and choice,
reports keys it does not know with the nearest known one (``finetune.epoch``:
did you mean ``finetune.epochs``?), checks that the backbone weights can be
had, and lists every problem in one error, each with the key, the value, what
is allowed and the command that fixes it.  It needs no framework and takes
well under a second; the ``check_params`` stage runs it first in every
``dvc repro`` and each stage runs it again when it starts.

:data:`SCHEMA` holds one rule per parameter; the allowed values of choices
come from :mod:`ultrasound_transfer.choices`, and what each parameter means
from the comment beside it in ``params.yaml``.  :func:`reference_markdown`
joins the three into the docs' parameter reference.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from ultrasound_transfer import choices
from ultrasound_transfer.backbone_weights import imagenet_reachable, weights_problems
from ultrasound_transfer.choices import MODEL_MIN_SIZES
from ultrasound_transfer.common import PARAMS_FILE, PipelineError, load_params
from ultrasound_transfer.paths import BACKBONES_DIR
from ultrasound_transfer.settings import Settings, settings_from_params


@dataclass(frozen=True)
class Rule:
    """What one parameter may be: ``accepts(value)`` and how to say it."""

    accepts: Callable[[Any], bool]
    allowed: str
    required: bool = True       # False: the key may be left out of its section


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, high: int) -> Rule:
    return Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
                f"an integer in [{low}, {high}]")


def number(low: float, high: float) -> Rule:
    return Rule(lambda v: is_number(v) and low <= v <= high, f"a number in [{low:g}, {high:g}]")


def choice(*values: Any) -> Rule:
    return Rule(lambda v: any(v == c and type(v) is type(c) for c in values),
                "one of " + ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values))


def subset(values: tuple[str, ...]) -> Rule:
    return Rule(lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)
                and len(set(v)) == len(v) and set(v) <= set(values),
                f"a non-empty list, without repeats, of {', '.join(values)}")


def numbers(low: float, high: float) -> Rule:
    return Rule(lambda v: isinstance(v, list) and all(is_number(x) and low <= x <= high for x in v),
                f"a list (empty allowed) of numbers in [{low:g}, {high:g}]")


def dataset_names() -> Rule:
    return Rule(lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)
                and len(set(v)) == len(v) and all(re.fullmatch(choices.DATASET_NAME, x) for x in v),
                f"a non-empty list, without repeats, of dataset names: built in ({', '.join(choices.DATASETS)}) or "
                "declared under download with a layout (docs/datasets.md)")


def optional_text(what: str) -> Rule:
    return Rule(lambda v: v is None or (isinstance(v, str) and bool(v)), f"null or {what}")


def weights_source() -> Rule:
    def accepts(value: Any) -> bool:
        if isinstance(value, dict):
            return bool(value) and all(k in choices.MODELS and isinstance(v, str) and bool(v) for k, v in value.items())
        return isinstance(value, str) and bool(value)

    return Rule(accepts, f"imagenet, none, or the path of a file in {BACKBONES_DIR}/, for every network; or a mapping "
                         f"from network ({', '.join(choices.MODELS)}) to one of those")


URL = Rule(lambda v: v is None or (isinstance(v, str) and re.match(r"https?://[^/\s]+", v) is not None),
           "null or an address starting with http:// or https://")
SHA256 = Rule(lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{64}", v) is not None),
              "null or a SHA-256: 64 hexadecimal digits")
SWITCH = choice(True, False)
PAIRS = Rule(lambda v: isinstance(v, list) and all(isinstance(p, dict) and set(p) == {"train", "test"}
                                                   and all(isinstance(p[k], str) for k in p) for p in v),
             "a list (empty allowed) of {train: <dataset>, test: <dataset>} entries, each dataset one of datasets")
# download.phantom and download.phantom_site_b: the generator of each built-in site.
PHANTOM_RULES = {"count": integer(4, 1_000_000), "malignant_fraction": number(0.0, 1.0),
                 "images_per_patient": integer(1, 1000), "difficulty": number(0.0, 1.0),
                 "native_size": integer(32, 4096), "near_copies": integer(0, 1_000_000),
                 "seed": integer(0, 2**32 - 1), "gain_db": number(-20.0, 20.0), "speckle_scale": number(0.25, 4.0),
                 "depth": number(0.5, 2.0), "overlay": choice(*choices.PHANTOM_OVERLAYS),
                 "size_shortcut": number(0.0, 1.0), "caliper_shortcut": number(0.0, 1.0)}

# download.<name> of a dataset of one's own (docs/datasets.md): its layout, and an archive to fetch where it has one.
# (The layout is required; own_dataset_problems says so, with the choices, where it is missing.)
OWN_DATASET_RULES = {"layout": replace(choice(*choices.DATASET_LAYOUTS), required=False),
                     "url": replace(URL, required=False), "sha256": replace(SHA256, required=False),
                     "reference_standard": replace(optional_text("what decided the labels"), required=False)}

SCHEMA: dict[str, Any] = {
    "datasets": dataset_names(),
    "models": subset(choices.MODELS),
    "ft_fraction": number(0.0, 1.0),
    "weights": weights_source(),
    "image_size": integer(32, 2048),
    "seed": integer(0, 2**32 - 1),
    "download": {
        **{dataset: PHANTOM_RULES for dataset in choices.PHANTOMS},
        **{dataset: {"url": URL, "sha256": SHA256} for dataset in choices.DATASETS if dataset not in choices.PHANTOMS},
    },
    "normalize": {
        "busi_classes": subset(choices.BUSI_CLASSES),
        "busi_normal_as_benign": SWITCH,
        "on_undecodable": choice(*choices.ON_UNDECODABLE),
        "near_duplicate_bits": integer(0, 64),
        "near_duplicate_cross_label": choice(*choices.NEAR_DUPLICATE_CROSS_LABEL),
        "resize": choice(*choices.RESIZE_MODES),
        "shortcut_warning_auc": number(0.5, 1.0),
    },
    "cv": {"n_splits": integer(2, 100), "grouping": choice(*choices.GROUPINGS), "repeats": integer(1, 100),
           "folds": choice(*choices.FOLD_SOURCES)},
    "finetune": {
        "epochs": integer(1, 10_000),
        "batch_size": integer(1, 4096),
        "optimizer": choice(*choices.OPTIMIZERS),
        "learning_rate": number(1e-9, 10.0),
        "backbone_lr_factor": number(1e-6, 100.0),
        "head_units": integer(1, 65536),
        "head_norm": choice(*choices.HEAD_NORMS),
        "dropout": number(0.0, 0.95),
        "validation_fraction": number(0.0, 0.5),
        "patience": integer(1, 10_000),
        "class_weight": choice(*choices.CLASS_WEIGHTS),
        "batch_norm": choice(*choices.BATCH_NORM_MODES),
        "deterministic_ops": SWITCH,
        "frozen_prefix_cache": SWITCH,
        "cache_dtype": choice(*choices.CACHE_DTYPES),
        "cache_memory_mb": number(0, 1 << 30),
        "precision": choice(*choices.PRECISIONS),
        "jit_compile": choice(*choices.JIT_COMPILE),
        "data_parallel": SWITCH,
        "augmentation": {"enabled": SWITCH,
                         **{key: number(0.0, high) for key, high in choices.AUGMENTATION_LIMITS.items()}},
    },
    "features": {"layer": choice(*choices.FEATURE_LAYERS)},
    "svm": {"train_on": choice(*choices.SVM_TRAIN_ON), "C": number(1e-9, 1e9), "C_grid": numbers(1e-9, 1e9),
            "C_selection": choice(*choices.C_SELECTIONS), "inner_folds": integer(2, 50)},
    "external": PAIRS,
    "evaluation": {"dense_calibration": choice(*choices.DENSE_CALIBRATIONS),
                   "operating_point": choice(*choices.OPERATING_POINTS), "target": number(0.5, 1.0),
                   "bootstrap_resamples": integer(100, 100_000), "confidence_level": number(0.5, 0.999),
                   "calibration_bins": integer(2, 100), "case_score": choice(*choices.CASE_SCORES)},
}
# Sections whose keys may be left out (a dataset's source: no address, no checksum).
OPTIONAL_SECTIONS = tuple(f"download.{dataset}" for dataset in choices.DATASETS if dataset not in choices.PHANTOMS)


def fix_hint(key: str) -> str:
    return f"edit params.yaml or run dvc exp run -S {key}=..."


def schema_problems(params: Any, schema: dict = SCHEMA, prefix: str = "") -> list[str]:
    """Missing keys, unknown keys (with the nearest known one) and values outside their rule."""
    if not isinstance(params, dict):
        return [f"{prefix.rstrip('.') or 'params.yaml'} = {params!r}: must be a section of keys"]
    problems = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if key not in schema:
            near = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
            hint = f"did you mean {prefix}{near[0]}?" if near else f"known keys here: {', '.join(schema)}"
            problems.append(f"{name}: unknown parameter; {hint}")
        elif isinstance(schema[key], dict):
            problems += schema_problems(value, schema[key], f"{name}.")
        elif not schema[key].accepts(value):
            problems.append(f"{name} = {value!r}: must be {schema[key].allowed} ({fix_hint(name)})")
    if prefix.rstrip(".") not in OPTIONAL_SECTIONS:
        for key in schema.keys() - params.keys():
            if isinstance(schema[key], dict) or schema[key].required:
                problems.append(f"{prefix}{key}: missing; add it to params.yaml (docs/parameters.md)")
    return problems


def own_datasets(params: Any) -> dict[str, dict]:
    """The datasets of one's own that ``download`` declares: every entry that is not built in, by name."""
    download = params.get("download") if isinstance(params, dict) else None
    if not isinstance(download, dict):
        return {}
    return {str(name): section for name, section in download.items() if name not in choices.DATASETS}


def schema_of(params: Any) -> dict[str, Any]:
    """:data:`SCHEMA` with a ``download`` rule for each dataset of one's own that ``params`` declares."""
    own = own_datasets(params)
    download = params.get("download") if isinstance(params, dict) and isinstance(params.get("download"), dict) else {}
    # A built-in dataset given a layout is refused by own_dataset_problems, once, rather than as an unknown key.
    given_layout = {name: {**SCHEMA["download"][name], "layout": Rule(lambda v: True, "", required=False)}
                    for name in choices.PUBLISHED_DATASETS
                    if isinstance(download.get(name), dict) and "layout" in download[name]}
    if not own and not given_layout:
        return SCHEMA
    return {**SCHEMA, "download": {**SCHEMA["download"], **given_layout,
                                   **{name: OWN_DATASET_RULES for name in own}}}


def own_dataset_problems(params: dict) -> list[str]:
    """Each dataset of one's own has a usable name and a layout, and no built-in dataset is given a layout; each
    name in ``datasets`` is built in or declared."""
    problems = []
    for name, section in own_datasets(params).items():
        if not re.fullmatch(choices.DATASET_NAME, name):
            problems.append(f"download.{name}: a dataset's name is its folder under data/raw/ and part of DVC's "
                            "stage names; use letters, digits, _ and - (up to 64), starting with a letter or digit")
        if isinstance(section, dict) and "layout" not in section:
            problems.append(f"download.{name}.layout: missing; a dataset of your own says how its files are laid "
                            f"out: {' or '.join(choices.DATASET_LAYOUTS)} (docs/datasets.md)")
    download = params.get("download") if isinstance(params.get("download"), dict) else {}
    for name in choices.PUBLISHED_DATASETS:
        if isinstance(download.get(name), dict) and "layout" in download[name]:
            problems.append(f"download.{name}.layout: {name} is a built-in dataset, read in its published layout; "
                            f"give your own dataset another name (e.g. {name}_local) and list that in datasets")
    studied = params.get("datasets")
    declared = [*choices.DATASETS, *own_datasets(params)]
    for name in studied if isinstance(studied, list) else []:
        if isinstance(name, str) and name not in declared:
            near = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}? Or declare" if near else "declare"
            problems.append(f"datasets: {name!r} is neither built in nor declared under download; {hint} it: "
                            f"download.{name}: {{layout: folders}} (docs/datasets.md)")
    return problems


def consistency_problems(params: dict) -> list[str]:
    """Rules between parameters: sizes each network needs, an SVM grid or C."""
    problems = []
    size, models = params.get("image_size"), params.get("models")
    if isinstance(size, int) and isinstance(models, list):
        for model in models:
            minimum = MODEL_MIN_SIZES.get(model)
            if minimum and size < minimum:
                problems.append(f"image_size = {size} is too small for {model}, which needs at least {minimum} px; "
                                f"run dvc exp run -S image_size={minimum}, or drop {model} from models")
    busi = (params.get("normalize") or {}).get("busi_classes") if isinstance(params.get("normalize"), dict) else None
    if isinstance(busi, list) and not {"benign", "malignant"} <= set(map(str, busi)):
        problems.append(f"normalize.busi_classes = {busi!r} must hold benign and malignant (malignant is the positive "
                        "class); add normal beside them for the three-class task")
    as_benign = (params.get("normalize") or {}).get("busi_normal_as_benign") if isinstance(params.get("normalize"),
                                                                                             dict) else None
    if as_benign is True and isinstance(busi, list) and "normal" not in busi:
        problems.append("normalize.busi_normal_as_benign = true reads BUSI's normal images as benign, but "
                        "normalize.busi_classes leaves normal out; run dvc exp run -S "
                        "'normalize.busi_classes=[benign,malignant,normal]', or set busi_normal_as_benign: false")
    problems += external_problems(params) + official_fold_problems(params)
    finetune, evaluation = params.get("finetune"), params.get("evaluation")
    if isinstance(finetune, dict) and isinstance(evaluation, dict):
        rule = evaluation.get("operating_point")
        if finetune.get("validation_fraction") == 0 and rule in choices.OPERATING_POINTS and rule != "argmax":
            problems.append(f"evaluation.operating_point = {rule} is chosen on each fold's inner validation images, "
                            "but finetune.validation_fraction = 0 leaves none; run dvc exp run -S "
                            "finetune.validation_fraction=0.2, or -S evaluation.operating_point=argmax")
        if finetune.get("validation_fraction") == 0 and evaluation.get("dense_calibration") == "platt":
            problems.append("evaluation.dense_calibration = platt is fitted on each fold's inner validation images, "
                            "but finetune.validation_fraction = 0 leaves none; run dvc exp run -S "
                            "finetune.validation_fraction=0.2, or -S evaluation.dense_calibration=none")
    problems += svm_selection_problems(params)
    return problems


def official_fold_problems(params: dict) -> list[str]:
    """``cv.folds: official`` needs every studied dataset to publish a partition of ``cv.n_splits`` folds, and one
    repeat (a published partition is one split)."""
    cv, studied = params.get("cv"), params.get("datasets")
    if not isinstance(cv, dict) or cv.get("folds") != "official" or not isinstance(studied, list):
        return []
    problems = []
    for dataset in studied:
        published = choices.OFFICIAL_PARTITIONS.get(dataset, ())
        if cv.get("n_splits") not in published:
            what = (f"publishes {' and '.join(map(str, published))}-fold partitions; run dvc exp run -S "
                    f"cv.n_splits={published[0]}" if published else "publishes no partition; run dvc exp run -S "
                    "cv.folds=seeded, or study only datasets that publish one "
                    f"({', '.join(choices.OFFICIAL_PARTITIONS)})")
            problems.append(f"cv.folds = official with cv.n_splits = {cv.get('n_splits')}: {dataset} {what}")
    if cv.get("repeats") != 1:
        problems.append(f"cv.folds = official reads one published partition, but cv.repeats = {cv.get('repeats')}; "
                        "run dvc exp run -S cv.repeats=1")
    if cv.get("grouping") == "none":
        problems.append("cv.folds = official keeps patients apart, but cv.grouping = none would make every split's "
                        "inner validation part image by image; run dvc exp run -S cv.grouping=exact (or near)")
    return problems


def svm_selection_problems(params: dict) -> list[str]:
    """C chosen on the validation images needs images the SVM did not learn from, and some to choose on."""
    svm, finetune = params.get("svm"), params.get("finetune")
    if not isinstance(svm, dict) or not isinstance(finetune, dict) or svm.get("C_selection") != "validation" \
            or not svm.get("C_grid"):
        return []
    if svm.get("train_on") == "training":
        return ["svm.C_selection = validation chooses C on the validation images, but svm.train_on = training "
                "makes the SVM learn from them; run dvc exp run -S svm.train_on=fit, or -S svm.C_selection=inner"]
    if finetune.get("validation_fraction") == 0:
        return ["svm.C_selection = validation chooses C on each fold's validation images, but "
                "finetune.validation_fraction = 0 leaves none; run dvc exp run -S finetune.validation_fraction=0.2, "
                "or -S svm.C_selection=inner"]
    return []


def external_problems(params: dict) -> list[str]:
    """Each ``external`` pair names two different datasets of ``datasets``, both of benign and malignant, once."""
    pairs, studied = params.get("external"), params.get("datasets")
    if not isinstance(pairs, list) or not isinstance(studied, list):
        return []
    normalize = params.get("normalize") or {}
    busi = normalize.get("busi_classes") or []
    three_classes = "normal" in busi and not normalize.get("busi_normal_as_benign")
    problems, seen = [], set()
    for number, pair in enumerate(pairs, start=1):
        train, test = pair["train"], pair["test"]
        where = f"external entry {number} ({{train: {train}, test: {test}}})"
        missing = [d for d in (train, test) if d not in studied]
        if missing:
            problems.append(f"{where}: {' and '.join(missing)} must also be in datasets, whose folds and "
                            f"networks it reads; run dvc exp run -S 'datasets=[{', '.join(studied + missing)}]'")
        if train == test:
            problems.append(f"{where}: a dataset's own images are its cross-validation; name two datasets")
        if (train, test) in seen:
            problems.append(f"{where}: listed twice; keep one")
        seen.add((train, test))
        if "busi" in (train, test) and three_classes:
            problems.append(f"{where}: BUSI with normal is three classes and the other dataset two; external "
                            "validation compares benign and malignant: run dvc exp run -S "
                            "'normalize.busi_classes=[benign,malignant]'")
    return problems


def weights_coverage_problems(params: dict) -> list[str]:
    """A mapping of ``weights`` gives every studied network its initial weights (none is assumed)."""
    weights, models = params.get("weights"), params.get("models")
    if not isinstance(weights, dict) or not isinstance(models, list):
        return []
    return [f"weights names no initial weights for {model}; add weights.{model}: imagenet (or none, or a file in "
            f"{BACKBONES_DIR}/), e.g. dvc exp run -S +weights.{model}=imagenet"
            for model in models if model not in weights]


def check_params(params: dict, reachable: Callable[[], str | None] = imagenet_reachable, *,
                 verify_weights: bool = False) -> dict:
    """Return ``params`` if every check passes; otherwise fail listing every problem (``verify_weights``: the
    weights files' checksums too, which reads them whole: the ``check_params`` stage does, once per run)."""
    problems = (own_dataset_problems(params) if isinstance(params, dict) else []) + schema_problems(
        params, schema_of(params))
    if not problems:
        problems = consistency_problems(params) + weights_coverage_problems(params)
    if not problems:
        problems = weights_problems(params["weights"], params["models"], reachable=reachable, verify=verify_weights)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise PipelineError(f"params.yaml has {len(problems)} problem(s), nothing was run:\n{listed}")
    return params


def load_settings(path: Path | str = PARAMS_FILE, *, verify_weights: bool = False) -> Settings:
    """``params.yaml`` checked (every problem at once, or a :class:`PipelineError`) and typed.

    What every stage reads first: a :class:`~ultrasound_transfer.settings.Settings`.  ``verify_weights``: the
    weights files' checksums too (:func:`check_params`).
    """
    return settings_from_params(check_params(load_params(path), verify_weights=verify_weights))


def checked_summary() -> dict:
    """What the check_params stage writes: the same for any valid params, so it never reruns a stage."""
    return {"valid": True, "checked": schema_keys()}


def schema_keys(schema: dict = SCHEMA, prefix: str = "") -> list[str]:
    """Every parameter's dotted key, in the schema's order."""
    return [k for key, rule in schema.items()
            for k in (schema_keys(rule, f"{prefix}{key}.") if isinstance(rule, dict) else [f"{prefix}{key}"])]


def parameter_comments(path: Path | str = PARAMS_FILE) -> dict[str, str]:
    """Dotted key -> the first line of the comment beside it in ``params.yaml``: what the parameter means."""
    from ruamel.yaml import YAML  # DVC's own YAML library; it keeps comments, which PyYAML drops

    comments: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            token = (node.ca.items.get(key) or [None, None, None])[2]
            if token is not None:
                comments[f"{prefix}{key}"] = token.value.split("\n")[0].lstrip("#").strip()
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

    with open(path) as f:
        walk(YAML().load(f), "")
    return comments


def meaning_of(key: str, comments: dict[str, str]) -> str:
    """The comment of ``key``, or of its nearest section for a key left out of ``params.yaml``; ``|`` escaped."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        text = comments.get(".".join(parts[:end]))
        if text:
            return text.replace("|", "\\|")
    return ""


def reference_markdown(path: Path | str = PARAMS_FILE) -> str:
    """The parameter reference of the docs: every key, its default, what it may be and what it means.

    Generated from :data:`SCHEMA` and ``params.yaml`` (values and comments), so
    it cannot drift from either; ``tests/test_parameters.py`` checks that every
    parameter has its comment.
    """
    from tabulate import tabulate

    params, comments = load_params(path), parameter_comments(path)
    rows = []
    for key in schema_keys():
        node: Any = params
        for part in key.split("."):
            node = (node or {}).get(part)
        rule: Any = SCHEMA
        for part in key.split("."):
            rule = rule[part]
        default = yaml.safe_dump(node, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
        rows.append([f"`{key}`", f"`{default}`", rule.allowed, meaning_of(key, comments)])
    return tabulate(rows, headers=["parameter", "default", "allowed", "meaning"], tablefmt="github")
