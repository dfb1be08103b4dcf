"""Run a named protocol over a grid of fine-tuning strategies, as named DVC experiments.

Usage::

    python -m stages.protocol paper --strategies 0,0.15,0.5,1             # run the paper's grid
    python -m stages.protocol paper --strategies 0,0.15,0.5,1 --dry-run   # commands and cost estimate only
    python -m stages.protocol paper --queue                               # queue (then: dvc queue start)
    python -m stages.protocol paper --datasets busi -S models=[ResNet50]  # paper settings, narrower

A protocol is a fixed set of parameter overrides.  Each strategy becomes one
experiment, ``<protocol>-ft<fraction>`` (``paper-ft0.15``), run with
``dvc exp run --temp``: in a temporary copy, so the workspace and its
``params.yaml`` (the offline demo) stay as they are, and through DVC's cache,
so stages finished before (the data stages; a strategy's folds) are restored,
not rerun.  A second call skips the experiments that exist and runs the
missing ones.  ``python -m stages.compare`` then tabulates them.  Not a pipeline stage.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess

import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.common import PipelineError, run_stage
from ultrasound_transfer.experiments import existing_experiments, format_value, resolved_params, split_override
from ultrasound_transfer.experiments import experiment_name as grid_experiment_name
from ultrasound_transfer.parameters import check_params, schema_problems
from ultrasound_transfer.paths import PREPARED_DIR

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
    },
}
PAPER_STRATEGIES = (0.0, 0.15, 0.5, 1.0)
# Images of the two-class task when the dataset is not prepared yet (README, "Datasets").
PUBLISHED_IMAGES = {"busi": 647, "rodrigues": 250}
# What the estimate assumes: sustained float32 arithmetic of a current workstation GPU in
# Keras, and per unit (dataset x network x strategy) the fixed costs of building networks,
# loading ImageNet weights, tracing the training step per fold and starting processes.
DEFAULT_TFLOPS = 20.0
DEFAULT_OVERHEAD_MIN = 3.0


def parse_strategies(text: str) -> list[float]:
    """``"0,0.15,0.5,1"`` -> [0.0, 0.15, 0.5, 1.0], each in [0, 1]."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PipelineError(f"--strategies {text!r}: give ft_fraction values separated by commas, e.g. 0,0.15,0.5,1.")
    if not values or any(not 0 <= v <= 1 for v in values):
        raise PipelineError(f"--strategies {text!r}: every ft_fraction must lie in [0, 1].")
    return values


def experiment_name(protocol: str, ft_fraction: float) -> str:
    """``paper-ft0.15``: the name ``stages.sweep --protocol paper`` gives the same grid point."""
    return grid_experiment_name(protocol, {"ft_fraction": f"{ft_fraction:g}"}, ["ft_fraction"])


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


def image_count(dataset: str, override: dict[str, int]) -> int | None:
    """Images of ``dataset``: as given, as prepared, or as published; None when unknown."""
    if dataset in override:
        return override[dataset]
    manifest = PREPARED_DIR / dataset / "manifest.csv"
    if manifest.exists():
        return len(pd.read_csv(manifest, usecols=["id"]))
    return PUBLISHED_IMAGES.get(dataset)


def cost_estimate(params: dict, strategies: list[float], images: dict[str, int], tflops: float,
                  overhead_min: float) -> tuple[str, float]:
    """A table of the grid's arithmetic and hours, and the total hours (datasets of known size only)."""
    from ultrasound_transfer.networks.backbones import build_classifier
    from ultrasound_transfer.networks.cost import split_macs, unit_work

    cfg, size, folds = params["finetune"], params["image_size"], params["cv"]["n_splits"]
    rows, total_hours = [], 0.0
    for model_name in params["models"]:
        for ft in strategies:
            model, _ = build_classifier(model_name, size, 2, "none", cfg["head_units"], cfg["dropout"], ft)
            macs = split_macs(model)
            for dataset in params["datasets"]:
                n = image_count(dataset, images)
                row = [dataset, n if n is not None else "?", model_name, f"{ft:g}",
                       f"{macs.prefix / 1e9:.3g}", f"{macs.tail / 1e9:.3g}"]
                if n is None:
                    rows.append(row + ["?", "?"])
                    continue
                work = unit_work(macs, n, folds, cfg["epochs"], cfg["validation_fraction"])
                hours = 2 * work.total / (tflops * 1e12) / 3600 + overhead_min / 60
                total_hours += hours
                rows.append(row + [f"{work.total / 1e15:.3g}", f"{hours:.2f}"])
    headers = ["dataset", "images", "network", "ft_fraction", "prefix GMAC/img", "tail GMAC/img", "PMAC", "hours"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), total_hours


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.protocol", description=__doc__.split("\n")[0])
    parser.add_argument("protocol", choices=sorted(PROTOCOLS))
    parser.add_argument("--strategies", default=",".join(f"{s:g}" for s in PAPER_STRATEGIES),
                        help="ft_fraction values, comma-separated (default: the paper's 0,0.15,0.5,1)")
    parser.add_argument("--datasets", nargs="+", help="replace the protocol's datasets")
    parser.add_argument("-S", "--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="one more parameter override, as in dvc exp run -S (repeatable)")
    parser.add_argument("--queue", action="store_true", help="queue the experiments instead of running them now")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and the cost estimate only")
    parser.add_argument("--images", nargs="+", default=[], metavar="DATASET=N",
                        help="image counts for the estimate of datasets not prepared yet (ddti, salivary)")
    parser.add_argument("--tflops", type=float, default=DEFAULT_TFLOPS,
                        help=f"sustained TFLOP/s assumed by the estimate (default {DEFAULT_TFLOPS:g})")
    parser.add_argument("--overhead-min", type=float, default=DEFAULT_OVERHEAD_MIN,
                        help=f"fixed minutes per dataset x network x strategy (default {DEFAULT_OVERHEAD_MIN:g})")
    args = parser.parse_args(argv)
    strategies = parse_strategies(args.strategies)
    overrides = overrides_for(args.protocol, args.datasets, args.extra)
    images = {}
    for item in args.images:
        dataset, _, count = item.partition("=")
        if not count.isdigit():
            raise PipelineError(f"--images {item!r}: write it as DATASET=N, e.g. --images ddti=480.")
        images[dataset] = int(count)
    commands = [(experiment_name(args.protocol, ft), dvc_command(experiment_name(args.protocol, ft), overrides, ft,
                                                                  args.queue)) for ft in strategies]
    try:     # every experiment's params, checked before any starts
        for ft in strategies:
            check_params(resolved_params({**overrides, "ft_fraction": f"{ft:g}"}))
    except PipelineError as problem:
        if not args.dry_run or schema_problems(resolved_params(overrides)):
            raise
        print(f"note: a real run would stop here: {problem}\n", flush=True)
    if args.dry_run:
        for _, command in commands:
            print(shlex.join(command), flush=True)
        params = resolved_params(overrides)
        table, hours = cost_estimate(params, strategies, images, args.tflops, args.overhead_min)
        print(f"\nWork of the grid (finetune + features, {params['cv']['n_splits']} folds, up to "
              f"{params['finetune']['epochs']} epochs, {params['image_size']} px; frozen prefix cached):\n\n{table}\n\n"
              f"About {hours:.1f} h at {args.tflops:g} TFLOP/s sustained plus {args.overhead_min:g} min per row "
              "(datasets of unknown size left out; early stopping usually ends sooner).", flush=True)
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
    if args.queue:
        print("[protocol] queued; run them with: dvc queue start", flush=True)


if __name__ == "__main__":
    run_stage(main)
