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
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.backends import MODELS, scratch_project
from benchmarks.results import RESULTS_DIR, markdown_table, write_results
from ultrasound_transfer.networks.heap import ENVIRONMENT_SWITCH

# What it runs in other processes, whose code it times too (benchmarks.results.timed_files).
RUNS = ("stages.finetune",)
GLIBC_DEFAULT_TOP_PAD = "131072"
SETTINGS = {"kept": {}, "glibc default": {ENVIRONMENT_SWITCH: GLIBC_DEFAULT_TOP_PAD}}


def stage_outputs(project: Path, model: str) -> dict[str, str]:
    """SHA-256 of every file ``finetune`` wrote for ``model`` (relative path -> digest)."""
    folders = [project / "models" / "phantom" / model, project / "data" / "features" / "phantom" / model]
    return {str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()}


def run_stage(project: Path, model: str, environment: dict[str, str]) -> dict:
    """One ``finetune`` process: wall seconds, user and system CPU seconds, minor page faults, peak resident MB
    and its outputs' digests."""
    env = {key: value for key, value in os.environ.items() if key != ENVIRONMENT_SWITCH} | environment
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "stages.finetune", "phantom", model], cwd=project, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait4, not wait: the resources of this child alone (RUSAGE_CHILDREN would take the largest of all).
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    errors = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"finetune of {model} failed (exit {process.returncode}):\n{errors[-3000:]}")
    return {"s": seconds, "user_s": usage.ru_utime, "system_s": usage.ru_stime, "page_faults": usage.ru_minflt,
            "peak_mb": usage.ru_maxrss / 1024, "outputs": stage_outputs(project, model)}


def differing_outputs(first: dict[str, str], other: dict[str, str]) -> list[str]:
    """The files one run wrote differently from the first run (or that only one of them wrote)."""
    return sorted(name for name in set(first) | set(other) if first.get(name) != other.get(name))


def network_row(model: str, runs: dict[str, list[dict]]) -> list[str]:
    """Per setting the fastest run's figures; the ratio kept / default; whether every run's outputs agree with the
    first kept run's, and if not, which runs and how many files differ."""
    kept, default = (min(runs[name], key=lambda run: run["s"]) for name in SETTINGS)
    first = runs["kept"][0]["outputs"]
    differing = [f"{name} run {number}: {len(files)} files" for name in SETTINGS
                 for number, run in enumerate(runs[name], start=1)
                 if (files := differing_outputs(first, run["outputs"]))]

    def pair(key: str, pattern: str) -> str:
        return f"{pattern.format(default[key])} / {pattern.format(kept[key])}"

    return [model, pair("s", "{:.1f}"), f"{kept['s'] / default['s']:.2f}×", pair("system_s", "{:.1f}"),
            pair("page_faults", "{:,}"), pair("peak_mb", "{:,.0f}"),
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
                    run = run_stage(project, model, SETTINGS[name])
                    runs[model][name].append(run)
                    files = differing_outputs(runs[model]["kept"][0]["outputs"], run["outputs"])   # kept runs first
                    print(f"round {round_number}: {model}, {name}: {run['s']:.1f} s, "
                          f"{run['page_faults']:,} page faults; differs from kept run 1 in {files or 'nothing'}",
                          flush=True)
    headers = ["network", "s (default / kept)", "kept / default", "system CPU s", "page faults",
               "peak MB", "outputs the same"]
    table = markdown_table([network_row(model, runs[model]) for model in args.models], headers)
    note = (f"`python -m stages.finetune phantom MODEL` on the demo's inputs, each run a fresh process: glibc's "
            f"default top pad (`{ENVIRONMENT_SWITCH}={GLIBC_DEFAULT_TOP_PAD}`) against freed memory kept (the "
            f"stage's setting), in turn over {args.rounds} round(s), the order alternating; per setting the "
            "fastest run, with that process's system CPU time, minor page faults and peak resident memory. "
            "\"Outputs the same\": every file the stage wrote, in every run of both settings, byte for byte.")
    data = {"rounds": args.rounds,
            "runs": {model: {name: [{key: value for key, value in run.items() if key != "outputs"}
                                    | {"differing_from_kept_run_1": differing_outputs(
                                        settings["kept"][0]["outputs"], run["outputs"])}
                                    for run in model_runs] for name, model_runs in settings.items()}
                     for model, settings in runs.items()},
            "outputs_same": {model: network_row(model, runs[model])[-1] == "yes" for model in args.models}}
    write_results("heap", data, {"table": table}, note=note, directory=args.results_dir)
    print(table)


if __name__ == "__main__":
    main()
