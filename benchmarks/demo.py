"""The demo's ``dvc repro`` at an earlier commit and at today's, one after the other on this machine.

``python -m benchmarks.demo --baseline 9dda3ae`` clones the repository into
a scratch folder at the baseline commit and at ``HEAD`` (the committed code:
commit what you want timed first) and runs ``python -m dvc repro`` in each,
with this environment's Python and packages for both, from nothing (a fresh
clone has no outputs and no DVC cache, so every stage runs, as for a new
user).  ``--rounds`` repeats the pair with the order alternating (baseline
first in odd rounds, today's first in even ones), so drift of the machine
falls on both; each commit's round with the least whole time is reported,
with its stages.  A stage's time runs from DVC's ``Running stage`` line to
the next one (or the end): the stage's process, imports included, and DVC's
hashing around it, as the person at the keyboard waits for it.

The runs' metrics (``metrics/``, every file) are compared byte for byte:
the claim "faster, computing the same" needs both halves.  Writes
``benchmarks/results/demo.json`` and ``.md``; the timed code is every stage
the demo's ``dvc repro`` runs (``external`` not, its list empty by default).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmarks.results import REPO, RESULTS_DIR, git, markdown_table, write_results


def demo_stage_modules(pipeline: dict, params: dict) -> tuple[str, ...]:
    """The stage modules the demo's ``dvc repro`` runs: those of ``pipeline``'s (dvc.yaml's) stages, less those
    whose ``foreach`` or ``matrix`` draws on a list that ``params`` (params.yaml) leaves empty, such as
    ``external``, which therefore yield no stage."""
    modules = set()
    for stage in pipeline["stages"].values():
        loops = [stage["foreach"]] if "foreach" in stage else list(stage.get("matrix", {}).values())
        if any(params.get(ref.removeprefix("${").removesuffix("}")) == [] for ref in loops if isinstance(ref, str)):
            continue
        modules.update(re.findall(r"python -m (stages\.\w+)", stage.get("do", stage)["cmd"]))
    return tuple(sorted(modules))


# What it runs in other processes, whose code it times too (benchmarks.results.timed_files).
RUNS = demo_stage_modules(yaml.safe_load((REPO / "dvc.yaml").read_text()),
                          yaml.safe_load((REPO / "params.yaml").read_text()))
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
WHOLE = "whole run"


@dataclass(frozen=True)
class DemoRun:
    """One ``dvc repro`` from a fresh clone: the commit, seconds per stage in the order run, the whole time and
    the metrics files it wrote (path relative to the clone -> bytes)."""

    commit: str
    stages: dict[str, float]
    whole_s: float
    metrics: dict[str, bytes]


def stage_times(stamped_lines: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds per stage from DVC's output lines, each with the time it arrived: from a stage's ``Running stage``
    line to the next one's, the last to ``end``."""
    starts = [(stamp, match.group(1)) for stamp, line in stamped_lines if (match := STAGE_LINE.match(line))]
    times = {}
    for (start, stage), (stop, _) in zip(starts, [*starts[1:], (end, "")]):
        times[stage] = stop - start
    return times


def read_metrics(clone: Path) -> dict[str, bytes]:
    """Every file under the clone's ``metrics/`` (the placeholders git keeps aside)."""
    return {str(path.relative_to(clone)): path.read_bytes() for path in sorted((clone / "metrics").rglob("*"))
            if path.is_file() and path.name != ".gitkeep"}


def run_demo(commit: str, scratch: Path, repo: Path = REPO) -> DemoRun:
    """Clone ``repo`` at ``commit`` into ``scratch`` and time ``dvc repro`` there, line by line."""
    clone = scratch / commit
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
    # The stages run as `python -m stages.X` (dvc.yaml): this environment's python first on the PATH; unbuffered,
    # so that each line is stamped when it is written.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    with subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        for line in process.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
    whole = time.perf_counter() - start
    if process.returncode != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        raise SystemExit(f"dvc repro at {commit} failed (exit {process.returncode}):\n{tail}")
    run = DemoRun(commit, stage_times(lines, whole), whole, read_metrics(clone))
    shutil.rmtree(clone)
    return run


def fastest(runs: list[DemoRun]) -> DemoRun:
    return min(runs, key=lambda run: run.whole_s)


def comparison_rows(baseline: DemoRun, today: DemoRun) -> list[list[str]]:
    """One row per stage (today's order; a stage only one of them ran shows a dash for the other), then the whole
    run: seconds at each commit and today's over the baseline's."""
    names = list(today.stages) + [stage for stage in baseline.stages if stage not in today.stages]
    rows = []
    for name in [*names, WHOLE]:
        before = baseline.whole_s if name == WHOLE else baseline.stages.get(name)
        after = today.whole_s if name == WHOLE else today.stages.get(name)
        ratio = f"{after / before:.2f}×" if before and after else "—"
        shown = [f"{value:.1f}" if value is not None else "—" for value in (before, after)]
        rows.append([f"**{name}**" if name == WHOLE else f"`{name}`", *shown, ratio])
    return rows


def metrics_difference(baseline: DemoRun, today: DemoRun) -> list[str]:
    """The metrics files that differ between the two runs, or that only one wrote."""
    names = sorted(set(baseline.metrics) | set(today.metrics))
    return [name for name in names if baseline.metrics.get(name) != today.metrics.get(name)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs, the order alternating (at least 1)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give at least 1 (a round runs the demo once at each commit).")
    baseline, today = git("rev-parse", "--short", args.baseline), git("rev-parse", "--short", "HEAD")
    if not baseline:
        raise SystemExit(f"--baseline {args.baseline}: no such commit in {REPO}; give a commit of its history.")
    runs: dict[str, list[DemoRun]] = {baseline: [], today: []}
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as scratch:
        for round_number in range(1, args.rounds + 1):
            order = (baseline, today) if round_number % 2 else (today, baseline)
            for commit in order:
                run = run_demo(commit, Path(scratch))
                runs[commit].append(run)
                print(f"round {round_number}: {commit} {run.whole_s:.1f} s", flush=True)
    best_baseline, best_today = fastest(runs[baseline]), fastest(runs[today])
    differing = metrics_difference(best_baseline, best_today)
    same_everywhere = not any(metrics_difference(a, b) for a in runs[baseline] for b in runs[today])
    headers = ["stage", f"{baseline} (baseline), s", f"{today} (today), s", "today / baseline"]
    table = markdown_table(comparison_rows(best_baseline, best_today), headers)
    metrics_line = ("The metrics files of every run are the same, byte for byte." if same_everywhere else
                    f"The metrics differ: {', '.join(differing) or 'between some rounds'}.")
    note = (f"`dvc repro` of the demo from a fresh clone (every stage runs), at {baseline} and {today}, "
            f"{args.rounds} round(s) in alternating order; per commit the round with the least whole time. A dash: "
            "DVC did not run the stage at that commit (its outputs, kept in git, were already up to date). "
            + metrics_line)
    data = {"baseline": baseline, "today": today, "rounds": args.rounds, "metrics_same": same_everywhere,
            "metrics_differing": differing,
            "runs": [{"commit": run.commit, "whole_s": run.whole_s, "stages": run.stages}
                     for commit_runs in runs.values() for run in commit_runs]}
    write_results("demo", data, {"table": table}, note=note, directory=args.results_dir)
    print(table)
    print(f"whole run: {best_today.whole_s / best_baseline.whole_s:.2f}x the baseline's; {metrics_line}")


if __name__ == "__main__":
    main()
