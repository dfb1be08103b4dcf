"""Run a named protocol over a grid of fine-tuning strategies, as named DVC experiments.

Usage::

    ultrasound-transfer protocol paper --strategies 0,0.15,0.5,1             # run the paper's grid
    ultrasound-transfer protocol paper --strategies 0,0.15,0.5,1 --dry-run   # commands and cost estimate only
    ultrasound-transfer protocol paper --queue                               # queue (then: dvc queue start)
    ultrasound-transfer protocol paper --datasets busi -S models=[ResNet50]  # paper settings, narrower
    ultrasound-transfer protocol paper --weights-arm radimagenet=ResNet50:models/backbones/rin_resnet50.h5
                                       # and a second arm: those networks from domain weights

A protocol is a fixed set of parameter overrides.  Each strategy becomes one
experiment, ``<protocol>-ft<fraction>`` (``paper-ft0.15``), run with
``dvc exp run --temp``: in a temporary copy, so the workspace and its
``params.yaml`` (the offline demo) stay as they are, and through DVC's cache,
so stages finished before (the data stages; a strategy's folds) are restored,
not rerun.  A second call skips the experiments that exist and runs the
missing ones.  ``ultrasound-transfer compare`` then tabulates them.

A second *weights arm* (``--weights-arm NAME=NETWORK:FILE,...``) runs the same
grid again for the networks named, each from its file in ``models/backbones/``
(declared beside it: ``ultrasound_transfer.backbone_weights``), as experiments
``<protocol>-<NAME>-ft<fraction>``: ImageNet against domain weights (RadImageNet,
Mei et al. 2022), same data, folds, budget and calibration, one switch apart.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.parameters import check_params, schema_problems
from ultrasound_transfer.settings import settings_from_params
from ultrasound_transfer.study.estimate import (
    DEFAULT_OVERHEAD_MIN,
    DEFAULT_TFLOPS,
    Rates,
    cost_estimate,
    measured_rates,
)
from ultrasound_transfer.study.experiments import existing_experiments, format_value, resolved_params, split_override
from ultrasound_transfer.study.experiments import experiment_name as grid_experiment_name

PROTOCOLS: dict[str, dict[str, object]] = {
    # Bal-Ghaoui et al. 2023: four public datasets, ImageNet weights, 224 px.
    # Epochs, patience and batch size are not given in the paper; these are
    # common choices for fine-tuning on a few hundred images.
    "paper": {
        "datasets": ["busi", "rodrigues", "ddti", "salivary"],
        "weights": "imagenet",
        "image_size": 224,
        "finetune.epochs": 50,
        "finetune.patience": 10,
        "finetune.batch_size": 32,
        "finetune.learning_rate": 0.0001,
        # One rate for the whole network: the paper describes no per-layer rates.
        "finetune.backbone_lr_factor": 1.0,
        # The paper reports one 5-fold run; three repeats give its estimates an honest spread
        # (Bouckaert & Frank 2004), at three times the training.
        "cv.repeats": 3,
    },
    # The defaults of params.yaml, for going back explicitly.
    "demo": {
        "datasets": ["phantom"],
        "weights": "none",
        "image_size": 80,
        "finetune.epochs": 15,
        "finetune.patience": 5,
        "finetune.batch_size": 16,
        "finetune.learning_rate": 0.001,
        "finetune.backbone_lr_factor": 0.01,
        "cv.repeats": 1,
    },
}
PAPER_STRATEGIES = (0.0, 0.15, 0.5, 1.0)


def parse_strategies(text: str) -> list[float]:
    """``"0,0.15,0.5,1"`` -> [0.0, 0.15, 0.5, 1.0], each in [0, 1]."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PipelineError(
            f"--strategies {text!r}: give ft_fraction values separated by commas, e.g. 0,0.15,0.5,1.") from None
    if not values or any(not 0 <= v <= 1 for v in values):
        raise PipelineError(f"--strategies {text!r}: every ft_fraction must lie in [0, 1].")
    return values


def experiment_name(protocol: str, ft_fraction: float, arm: str | None = None) -> str:
    """``paper-ft0.15``: the name ``ultrasound-transfer sweep --protocol paper`` gives the same grid point;
    ``paper-radimagenet-ft0.15`` in the weights arm ``radimagenet``."""
    return grid_experiment_name(f"{protocol}-{arm}" if arm else protocol, {"ft_fraction": f"{ft_fraction:g}"},
                                ["ft_fraction"])


@dataclass(frozen=True)
class WeightsArm:
    """A second arm of the grid: ``networks`` (each from its weights file) trained again under ``name``."""

    name: str
    files: dict[str, str]          # network -> file in models/backbones/

    def overrides(self) -> dict[str, str]:
        """Its ``-S`` values: only its networks, each from its file."""
        return {"models": format_value(list(self.files)), "weights": format_value(self.files)}


def parse_weights_arm(text: str) -> WeightsArm:
    """``"radimagenet=ResNet50:models/backbones/a.h5,InceptionV3:models/backbones/b.h5"`` -> a :class:`WeightsArm`."""
    from ultrasound_transfer.choices import MODELS

    name, _, pairs = text.partition("=")
    form = "--weights-arm NAME=NETWORK:FILE[,NETWORK:FILE], e.g. radimagenet=ResNet50:models/backbones/r50.h5"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name) or not pairs:
        raise PipelineError(f"--weights-arm {text!r}: write it as {form} (the name in lower case, digits and _).")
    files = {}
    for pair in pairs.split(","):
        network, _, file = pair.partition(":")
        if network.strip() not in MODELS or not file.strip():
            raise PipelineError(f"--weights-arm {text!r}: {pair!r} is not NETWORK:FILE with NETWORK one of "
                                f"{', '.join(MODELS)}; write it as {form}.")
        files[network.strip()] = file.strip()
    return WeightsArm(name, files)


def overrides_for(protocol: str, datasets: list[str] | None, extra: list[str]) -> dict[str, str]:
    """The protocol's ``-S`` values, then ``--datasets``, then the user's ``-S key=value``."""
    overrides = {key: format_value(value) for key, value in PROTOCOLS[protocol].items()}
    if datasets:
        overrides["datasets"] = format_value(datasets)
    for item in extra:
        key, value = split_override(item)
        overrides[key] = value
    return overrides


def dvc_command(name: str, overrides: dict[str, str], ft_fraction: float, queue: bool) -> list[str]:
    """The ``dvc exp run`` command line of one grid point."""
    command = ["dvc", "exp", "run", "--name", name, "--queue" if queue else "--temp"]
    for key, value in {**overrides, "ft_fraction": f"{ft_fraction:g}"}.items():
        command += ["-S", f"{key}={value}"]
    return command


@dataclass(frozen=True)
class ProtocolRequest:
    """What ``ultrasound-transfer protocol`` was asked (its options, see :mod:`ultrasound_transfer.cli`)."""

    protocol: str
    strategies: list[float] = field(default_factory=lambda: list(PAPER_STRATEGIES))
    datasets: list[str] | None = None
    extra: list[str] = field(default_factory=list)        # -S key=value
    queue: bool = False
    dry_run: bool = False
    images: dict[str, int] = field(default_factory=dict)  # for the estimate
    tflops: float | None = None                           # assumed rates (None: the defaults) ...
    overhead_min: float | None = None
    calibration: Path | None = None                       # ... or a benchmarks.device_unit results file's
    weights_arm: WeightsArm | None = None                 # a second arm: some networks from domain weights


def parse_image_counts(items: list[str]) -> dict[str, int]:
    """``["ddti=480"]`` -> ``{"ddti": 480}``."""
    images = {}
    for item in items:
        dataset, _, count = item.partition("=")
        if not count.isdigit():
            raise PipelineError(f"--images {item!r}: write it as DATASET=N, e.g. --images ddti=480.")
        images[dataset] = int(count)
    return images


def run_protocol(request: ProtocolRequest) -> None:
    """Check every experiment's params, then run (or queue, or only print and estimate) them."""
    if request.calibration and not request.dry_run:
        raise PipelineError(f"--calibration {request.calibration}: it changes only the estimate that --dry-run "
                            "prints; add --dry-run, or leave it out to run the grid.")
    if request.calibration and (request.tflops is not None or request.overhead_min is not None):
        raise PipelineError(f"--calibration {request.calibration} gives measured rates; --tflops and --overhead-min "
                            "give assumed ones: pass one or the other.")
    overrides = overrides_for(request.protocol, request.datasets, request.extra)
    arms = [(None, overrides)]
    if request.weights_arm:
        arms.append((request.weights_arm.name, {**overrides, **request.weights_arm.overrides()}))
    commands = [(name, dvc_command(name, arm_overrides, ft, request.queue))
                for arm, arm_overrides in arms for ft in request.strategies
                for name in [experiment_name(request.protocol, ft, arm)]]
    try:     # every experiment's params, checked before any starts
        for _, arm_overrides in arms:
            for ft in request.strategies:
                check_params(resolved_params({**arm_overrides, "ft_fraction": f"{ft:g}"}))
    except PipelineError as problem:
        if not request.dry_run or schema_problems(resolved_params(overrides)):
            raise
        print(f"note: a real run would stop here: {problem}\n", flush=True)
    if request.dry_run:
        for _, command in commands:
            print(shlex.join(command), flush=True)
        settings = settings_from_params(resolved_params(overrides))
        rates = (measured_rates(request.calibration, precision=settings.finetune.precision,
                                image_size=settings.image_size) if request.calibration
                 else Rates.assumed(DEFAULT_TFLOPS if request.tflops is None else request.tflops,
                                    DEFAULT_OVERHEAD_MIN if request.overhead_min is None else request.overhead_min))
        table, hours = cost_estimate(settings, request.strategies, images=request.images, rates=rates)
        print(f"\nWork of the grid (finetune, {settings.cv.n_splits} folds x {settings.cv.repeats} "
              f"repeats, up to "
              f"{settings.finetune.epochs} epochs, {settings.image_size} px; frozen prefix cached):\n\n{table}\n\n"
              f"About {hours:.1f} h at {rates.source} (datasets of unknown size left out; early stopping "
              "usually ends sooner).", flush=True)
        return
    done = existing_experiments()
    failed = []
    for name, command in commands:
        if name in done:
            print(f"[protocol] {name}: exists, skipped (dvc exp remove {name} to redo it)", flush=True)
            continue
        print(f"[protocol] {shlex.join(command)}", flush=True)
        if subprocess.call(command) != 0:
            failed.append(name)
    if failed:
        raise PipelineError(f"experiments failed: {', '.join(failed)}; see their output above. "
                            "Rerun the same command to retry only those.")
    if request.queue:
        print("[protocol] queued; run them with: dvc queue start", flush=True)
