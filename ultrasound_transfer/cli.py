"""``ultrasound-transfer``: the commands a person types, beside the DVC stages.

::

    ultrasound-transfer protocol paper --dry-run      # the paper's grid: commands, multiply-adds, hours
    ultrasound-transfer protocol paper                # run it as named DVC experiments (paper-ft0.15, ...)
    ultrasound-transfer sweep -S ft_fraction=0,0.15,0.5,1 --remote /shared/dvc-remote   # the same on Dask workers
    ultrasound-transfer compare                       # the paper's table and the best strategy, tested
    ultrasound-transfer predict --dataset busi --model ResNet50 scans/       # the trained ensemble on new scans
    ultrasound-transfer explain --dataset busi --model ResNet50 scans/       # Grad-CAM overlays
    ultrasound-transfer export --dataset busi --model ResNet50               # .keras, ONNX and a model card

Each subcommand parses its options here and hands them, typed, to its module
in :mod:`ultrasound_transfer.study` or :mod:`ultrasound_transfer.deployment`,
where the logic lives.  Building the parser imports no framework (the values
it offers come from :mod:`ultrasound_transfer.choices` and from modules that
load TensorFlow or Keras only inside their functions), so ``--help`` answers
at once.  A :class:`~ultrasound_transfer.common.PipelineError` ends the
command with one message and exit status 2, as in the stages; Ctrl-C with one
line and exit status 130.  Run from the repository root.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ultrasound_transfer.common import PipelineError, run_stage
from ultrasound_transfer.networks.heap import keep_freed_memory

PROG = "ultrasound-transfer"
# As in the stages: TensorFlow's C++ log lines would bury the output (the estimate builds networks).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def add_protocol(commands: argparse._SubParsersAction) -> None:
    from ultrasound_transfer.study.estimate import DEFAULT_OVERHEAD_MIN, DEFAULT_TFLOPS
    from ultrasound_transfer.study.protocols import PAPER_STRATEGIES, PROTOCOLS

    parser = commands.add_parser("protocol", help="run a named protocol over fine-tuning strategies as DVC experiments",
                                 description="Run a named protocol (paper, demo) over a grid of ft_fraction values, "
                                             "one named DVC experiment each.")
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
    parser.add_argument("--tflops", type=float,
                        help=f"sustained TFLOP/s assumed by the estimate (default {DEFAULT_TFLOPS:g})")
    parser.add_argument("--overhead-min", type=float,
                        help=f"fixed minutes per dataset x network x strategy (default {DEFAULT_OVERHEAD_MIN:g})")
    parser.add_argument("--calibration", type=Path, metavar="DEVICE_UNIT_JSON",
                        help="with --dry-run: estimate at the rates and fixed cost benchmarks.device_unit measured "
                             "(its device_unit_<backend>.json) instead of --tflops and --overhead-min")
    parser.add_argument("--weights-arm", metavar="NAME=NETWORK:FILE[,NETWORK:FILE]",
                        help="run the grid again for these networks, each from its declared weights file in "
                             "models/backbones/, as experiments <protocol>-NAME-ft<fraction> (e.g. "
                             "radimagenet=ResNet50:models/backbones/r50.h5,InceptionV3:models/backbones/iv3.h5)")
    parser.set_defaults(run=run_protocol)


def run_protocol(args: argparse.Namespace) -> None:
    from ultrasound_transfer.study.protocols import (
        ProtocolRequest,
        parse_image_counts,
        parse_strategies,
        parse_weights_arm,
    )
    from ultrasound_transfer.study.protocols import run_protocol as run

    run(ProtocolRequest(protocol=args.protocol, strategies=parse_strategies(args.strategies), datasets=args.datasets,
                        extra=args.extra, queue=args.queue, dry_run=args.dry_run,
                        images=parse_image_counts(args.images), tflops=args.tflops, overhead_min=args.overhead_min,
                        calibration=args.calibration,
                        weights_arm=parse_weights_arm(args.weights_arm) if args.weights_arm else None))


def add_sweep(commands: argparse._SubParsersAction) -> None:
    from ultrasound_transfer.study.protocols import PROTOCOLS

    parser = commands.add_parser("sweep", help="run a grid of experiments on a Dask cluster",
                                 description="Run a grid of experiments on a Dask cluster; results come home "
                                             "through a DVC remote.")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=V1,V2",
                        help="a parameter and its values, as in dvc exp run --queue -S (repeatable)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), help="start from a protocol's overrides")
    parser.add_argument("--name", help="experiment name prefix (default: the protocol's name, or 'sweep')")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="local Dask workers (default: one per visible GPU, else 1); "
                                                   "more workers than GPUs share them")
    where.add_argument("--units-per-gpu", type=int, default=1, metavar="K",
                       help="K local workers per visible GPU, for units too small to fill one (default 1)")
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://head:8786")
    parser.add_argument("--remote", help="DVC remote shared by all machines: a configured name, a URL or an "
                                         "absolute path (default: the repository's default remote)")
    parser.add_argument("--retries", type=int, default=2, help="times Dask retries a failed unit (default 2)")
    parser.add_argument("--repo-url", help="what workers git-clone (default: this repository's folder; "
                                           "give a URL or shared path for workers on other machines)")
    parser.add_argument("--workdir", help="folder for the workers' clones and DVC cache (default: .dvc/tmp/sweep "
                                          "here for a local cluster, the worker's temporary folder otherwise)")
    parser.add_argument("--dry-run", action="store_true", help="list the grid points and units, run nothing")
    parser.set_defaults(run=run_sweep)


def run_sweep(args: argparse.Namespace) -> None:
    from ultrasound_transfer.study.experiments import split_override
    from ultrasound_transfer.study.sweep import SweepRequest
    from ultrasound_transfer.study.sweep import run_sweep as run

    for item in args.set:
        split_override(item)
    if args.workers is not None and args.workers < 1:
        raise PipelineError(f"--workers {args.workers}: give at least 1.")
    run(SweepRequest(grid=args.set, protocol=args.protocol, name=args.name, workers=args.workers,
                     units_per_gpu=args.units_per_gpu, scheduler=args.scheduler, remote=args.remote,
                     retries=args.retries, repo_url=args.repo_url,
                     workdir=args.workdir, dry_run=args.dry_run))


def add_compare(commands: argparse._SubParsersAction) -> None:
    from ultrasound_transfer.choices import CLASSIFIERS
    from ultrasound_transfer.study.comparison import METRICS

    parser = commands.add_parser("compare", help="compare the experiments of an ft_fraction sweep",
                                 description="The paper's table (network x strategy x classifier) and the best "
                                             "ft_fraction per model, tested as a selection.")
    parser.add_argument("--classifier", choices=CLASSIFIERS, default="svm",
                        help="the classifier whose best strategy is tested (default svm)")
    parser.add_argument("--metric", default="roc_auc", choices=METRICS,
                        help="the per-split metric compared (default roc_auc, the primary metric)")
    parser.add_argument("--exp-json", type=Path, help="read this saved 'dvc exp show --json' instead of running it")
    parser.add_argument("--prefix", help="compare only experiments whose names start with this, e.g. one weights "
                                         "arm's paper-radimagenet-")
    parser.add_argument("--arms", nargs=2, metavar=("BASE", "OTHER"),
                        help="instead, the second weights arm against the first, split by split (e.g. paper "
                             "paper-radimagenet: experiments paper-ft<f> and paper-radimagenet-ft<f>)")
    parser.set_defaults(run=run_compare)


def run_compare(args: argparse.Namespace) -> None:
    from ultrasound_transfer.study.comparison import run_arm_comparison, run_comparison

    if args.arms:
        run_arm_comparison(tuple(args.arms), classifier=args.classifier, metric=args.metric, exp_json=args.exp_json)
        return
    run_comparison(classifier=args.classifier, metric=args.metric, exp_json=args.exp_json, prefix=args.prefix)


def add_trained_network(parser: argparse.ArgumentParser, *, out: str, scans: bool) -> None:
    """The options that name one trained dataset x network (predict, explain, export), its scans and output."""
    parser.add_argument("--dataset", required=True, help="the dataset the network was trained on (params datasets)")
    parser.add_argument("--model", required=True, help="the network (params models), e.g. ResNet50")
    parser.add_argument("--experiment", help="a DVC experiment's networks (dvc exp show) instead of the workspace's")
    parser.add_argument("--out", type=Path, help=f"what is written (default {out})")
    if scans:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="image or DICOM files, or folders of them")


def add_predict(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="apply a trained network to new scans (images, DICOM)",
                                 description="The study's ensemble of split networks on new scans: one row per "
                                             "frame with each classifier's probability of malignant and call.")
    add_trained_network(parser, out="predictions/<dataset>-<model>.csv", scans=True)
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first file that cannot be read, writing nothing")
    parser.set_defaults(run=run_predict)


def run_predict(args: argparse.Namespace) -> None:
    from ultrasound_transfer.deployment.predict import PredictRequest
    from ultrasound_transfer.deployment.predict import run_predict as run

    run(PredictRequest(dataset=args.dataset, model=args.model, paths=args.paths, out=args.out,
                       experiment=args.experiment, strict=args.strict))


def add_explain(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("explain", help="Grad-CAM heat maps of a trained network on scans",
                                 description="Grad-CAM overlays (PNG) of the study's ensemble for the malignant "
                                             "score, one per frame.")
    add_trained_network(parser, out="the folder explanations/<dataset>-<model>/", scans=True)
    parser.set_defaults(run=run_explain)


def run_explain(args: argparse.Namespace) -> None:
    from ultrasound_transfer.deployment.gradcam import ExplainRequest
    from ultrasound_transfer.deployment.gradcam import run_explain as run

    run(ExplainRequest(dataset=args.dataset, model=args.model, paths=args.paths, out=args.out,
                       experiment=args.experiment))


def add_export(commands: argparse._SubParsersAction) -> None:
    from ultrasound_transfer.choices import EXPORT_FORMATS

    parser = commands.add_parser("export", help="write a trained network as .keras and ONNX with a model card",
                                 description="One self-contained file per format of the study's ensemble, its "
                                             "facts (export.json) and a model card.")
    add_trained_network(parser, out="the folder exports/<dataset>-<model>/", scans=False)
    parser.add_argument("--formats", default=",".join(EXPORT_FORMATS),
                        help=f"comma-separated, among {', '.join(EXPORT_FORMATS)} (default all)")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> None:
    from ultrasound_transfer.deployment.export import ExportRequest
    from ultrasound_transfer.deployment.export import run_export as run

    run(ExportRequest(dataset=args.dataset, model=args.model, out=args.out,
                      formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
                      experiment=args.experiment))


def parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per command."""
    top = argparse.ArgumentParser(prog=PROG, description="The commands a person types, beside the DVC stages "
                                  "(run from the repository root).")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_protocol, add_sweep, add_compare, add_predict, add_explain, add_export):
        add(commands)
    return top


def run(argv: list[str]) -> None:
    """Run one command; a :class:`PipelineError` propagates (for tests and callers)."""
    args = parser().parse_args(argv)
    args.run(args)


def main() -> None:
    """The console entry point: as a stage runs, an error becomes one message and exit status 2, Ctrl-C one line
    and exit status 130 (:func:`~ultrasound_transfer.common.run_stage`); freed memory is kept for the next
    network step (:mod:`~ultrasound_transfer.networks.heap`)."""
    keep_freed_memory()
    run_stage(run)


if __name__ == "__main__":
    main()
