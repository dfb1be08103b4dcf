"""The ``finetune`` stage with glibc's default heap and with freed memory kept between steps.

``python -m benchmarks.heap`` copies the default run's inputs to ``finetune``
into a scratch folder (run the default ``dvc repro`` first) and runs
``python -m stages.finetune phantom MODEL`` there for each network, as the
stage runs (freed memory kept: :mod:`ultrasound_transfer.networks.heap`) and
with ``MALLOC_TOP_PAD_=131072`` (glibc's default top pad, which the stage
then leaves as set), the two in turn over ``--rounds`` with the order
alternating; per network and setting the least time is reported, with the
process's CPU time in the kernel, its page faults and its peak resident
memory (from ``os.wait4``, that process alone).  The two settings' outputs
(fold weights, the training record, the features) are compared byte for
byte: the claim is "faster, computing the same".  Writes
``benchmarks/results/heap.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import tempfile
from pathlib import Path

from benchmarks.backends import MODELS, scratch_project
from benchmarks.processes import GLIBC_DEFAULT_HEAP, child_environment, timed_process
from benchmarks.results import RESULTS_DIR, markdown_table, write_results
from ultrasound_transfer.networks.heap import ENVIRONMENT_SWITCH

# What it runs in other processes, whose code it times too (benchmarks.results.timed_files).
RUNS = ("stages.finetune",)
SETTINGS = {"kept": {}, "glibc default": GLIBC_DEFAULT_HEAP}


def stage_outputs(project: Path, model: str) -> dict[str, str]:
    """SHA-256 of every file ``finetune`` wrote for ``model`` (relative path -> digest)."""
    folders = [project / "models" / "phantom" / model, project / "data" / "features" / "phantom" / model]
    return {str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()}


def timed_finetune(project: Path, model: str, environment: dict[str, str]) -> dict:
    """One ``finetune`` process: its :class:`~benchmarks.processes.ProcessUsage` (wall and CPU seconds, page
    faults, peak resident MB) and its outputs' digests."""
    env = child_environment(environment) | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    usage = timed_process([sys.executable, "-m", "stages.finetune", "phantom", model], cwd=project, env=env,
                          what=f"finetune of {model}")
    return dataclasses.asdict(usage) | {"outputs": stage_outputs(project, model)}


def differing_outputs(first: dict[str, str], other: dict[str, str]) -> list[str]:
    """The files one run wrote differently from the first run (or that only one of them wrote)."""
    return sorted(name for name in set(first) | set(other) if first.get(name) != other.get(name))


def network_row(model: str, runs: dict[str, list[dict]]) -> list[str]:
    """Per setting the fastest run's figures; the ratio kept / default; whether every run's outputs agree with the
    first kept run's, and if not, which runs and how many files differ (each run's
    ``differing_from_kept_run_1``)."""
    kept, default = (min(runs[name], key=lambda run: run["seconds"]) for name in SETTINGS)
    differing = [f"{name} run {number}: {len(run['differing_from_kept_run_1'])} files" for name in SETTINGS
                 for number, run in enumerate(runs[name], start=1) if run["differing_from_kept_run_1"]]

    def pair(key: str, pattern: str) -> str:
        return f"{pattern.format(default[key])} / {pattern.format(kept[key])}"

    return [model, pair("seconds", "{:.1f}"), f"{kept['seconds'] / default['seconds']:.2f}×",
            pair("system_s", "{:.1f}"), pair("page_faults", "{:,}"), pair("peak_mb", "{:,.0f}"),
            "yes" if not differing else f"**no**, against kept run 1: {'; '.join(differing)}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting, the order alternating")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give at least 1 (a round runs each setting once).")
    runs: dict[str, dict[str, list[dict]]] = {model: {name: [] for name in SETTINGS} for model in args.models}
    with tempfile.TemporaryDirectory(prefix="heap-bench-") as scratch:
        project = scratch_project(Path(scratch), {})
        for round_number in range(1, args.rounds + 1):
            order = list(SETTINGS) if round_number % 2 else list(reversed(SETTINGS))
            for model in args.models:
                for name in order:
                    run = timed_finetune(project, model, SETTINGS[name])
                    # Round 1 runs "kept" first, so the first kept run is there to compare with (or is this run).
                    first = runs[model]["kept"][0]["outputs"] if runs[model]["kept"] else run["outputs"]
                    run["differing_from_kept_run_1"] = differing_outputs(first, run["outputs"])
                    runs[model][name].append(run)
                    print(f"round {round_number}: {model}, {name}: {run['seconds']:.1f} s, "
                          f"{run['page_faults']:,} page faults; differs from kept run 1 in "
                          f"{run['differing_from_kept_run_1'] or 'nothing'}", flush=True)
    headers = ["network", "s (default / kept)", "kept / default", "system CPU s", "page faults",
               "peak MB", "outputs the same"]
    table = markdown_table([network_row(model, runs[model]) for model in args.models], headers)
    default_pad = GLIBC_DEFAULT_HEAP[ENVIRONMENT_SWITCH]
    note = (f"`python -m stages.finetune phantom MODEL` on the demo's inputs, each run a fresh process: glibc's "
            f"default top pad (`{ENVIRONMENT_SWITCH}={default_pad}`) against freed memory kept (the "
            f"stage's setting), in turn over {args.rounds} round(s), the order alternating; per setting the "
            "fastest run, with that process's system CPU time, minor page faults and peak resident memory. "
            "\"Outputs the same\": every file the stage wrote, in every run of both settings, byte for byte.")
    data = {"rounds": args.rounds,
            "runs": {model: {name: [{key: value for key, value in run.items() if key != "outputs"}
                                    for run in model_runs] for name, model_runs in settings.items()}
                     for model, settings in runs.items()},
            "outputs_same": {model: not any(run["differing_from_kept_run_1"] for model_runs in settings.values()
                                            for run in model_runs)
                             for model, settings in runs.items()}}
    write_results("heap", data, {"table": table}, note=note, directory=args.results_dir)
    print(table)


if __name__ == "__main__":
    main()
