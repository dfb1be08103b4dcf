"""Run the pipeline under a named protocol, as a DVC experiment.

Usage::

    python -m stages.protocol paper              # run it now (dvc exp run)
    python -m stages.protocol paper --queue      # queue it (then: dvc queue start)
    python -m stages.protocol paper --dry-run    # print the dvc command only
    python -m stages.protocol paper --datasets phantom   # paper settings on other data

A protocol is a fixed set of parameter overrides, passed to ``dvc exp run -S``;
``params.yaml`` itself keeps the offline demo, so the committed baseline stays
reproducible on any laptop and the experiment is listed by ``dvc exp show``.
This is not a pipeline stage.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

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
    },
    # The defaults of params.yaml, for going back explicitly.
    "demo": {
        "datasets": ["phantom"],
        "weights": "none",
        "image_size": 80,
        "finetune.epochs": 2,
        "finetune.patience": 5,
        "finetune.batch_size": 16,
        "finetune.learning_rate": 0.0001,
    },
}


def format_value(value: object) -> str:
    """A value as DVC's ``-S key=value`` parses it (YAML)."""
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def dvc_command(protocol: str, datasets: list[str] | None, queue: bool, name: str | None) -> list[str]:
    """The ``dvc exp run`` command line for ``protocol``."""
    overrides = dict(PROTOCOLS[protocol])
    if datasets:
        overrides["datasets"] = datasets
    command = ["dvc", "exp", "run", "--name", name or protocol]
    if queue:
        command.append("--queue")
    for key, value in overrides.items():
        command += ["-S", f"{key}={format_value(value)}"]
    return command


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.protocol", description=__doc__.split("\n")[0])
    parser.add_argument("protocol", choices=sorted(PROTOCOLS))
    parser.add_argument("--datasets", nargs="+", help="replace the protocol's datasets")
    parser.add_argument("--name", help="experiment name (default: the protocol's)")
    parser.add_argument("--queue", action="store_true", help="queue instead of running now")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_args(argv)
    command = dvc_command(args.protocol, args.datasets, args.queue, args.name)
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
