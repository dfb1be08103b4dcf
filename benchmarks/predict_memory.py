"""Memory and time of ``ultrasound-transfer predict`` as a whole process, against another commit's.

``python -m benchmarks.predict_memory --baseline-rev REV`` trains the same
small study (VGG16, 32 px, 3 splits, one epoch; a few seconds of training)
in two scratch copies of the repository, the working tree's and commit
``REV``'s, each with its own code, and times in each the command a person
types on two sets of scans:

* **1000 frames**: the phantom's raw frames, copied under new names;
* **six 400-megapixel frames**: 20000 x 20000 gray PNGs (a frame enlarged),
  which decode to 400 MB each.

The two copies run in turn, A B A B, ``--rounds`` times; the table gives the
least wall time and the largest peak resident memory of each (the process's
own accounting, ``ru_maxrss`` of the child), and their ratios.  The floor of
a streaming reader is one decoded frame (400 MB at 400 megapixels) beside the
framework; a reader that keeps every frame holds six.  Writes
``benchmarks/results/predict_memory.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from benchmarks.processes import timed_process
from benchmarks.results import REPO, RESULTS_DIR, markdown_table, write_results
from tests.conftest import merged

# What it runs in other processes, whose code it times too (benchmarks.results.timed_files): the command as a
# person runs it, `python -m ultrasound_transfer predict`, entry point and process set-up included.
RUNS = ("ultrasound_transfer.__main__",)

# The study both copies train: small enough to train in seconds, the real pipeline all the same.
STUDY = {"datasets": ["phantom"], "models": ["VGG16"], "image_size": 32,
         "download": {"phantom": {"count": 24, "images_per_patient": 2, "native_size": 48}},
         "cv": {"n_splits": 3}, "finetune": {"epochs": 1, "batch_size": 8, "validation_fraction": 0.25},
         "svm": {"C_grid": [0.1, 1.0], "inner_folds": 2}, "evaluation": {"bootstrap_resamples": 200}}
LARGE_SIDE = 20000        # px: 400 megapixels
LARGE_COUNT = 6


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PYTHONPATH": str(cwd), "PATH": path}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed in {cwd}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def trained_copy(rev: str | None, folder: Path) -> Path:
    """The repository at ``rev`` (None: the working tree, uncommitted changes included) with the study trained."""
    folder.mkdir(parents=True)
    if rev is None:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
        for relative in filter(None, listed.split("\0")):
            generated = relative.startswith(("metrics/", "dvc.lock")) and not relative.endswith(".gitkeep")
            if (REPO / relative).is_file() and not generated:
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / relative, folder / relative)
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        (folder / "dvc.lock").unlink(missing_ok=True)
    params = merged(yaml.safe_load((folder / "params.yaml").read_text()), STUDY)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "study"]):
        run(command, folder)
    run([sys.executable, "-m", "dvc", "repro"], folder)
    return folder


def scan_sets(folder: Path, study: Path) -> dict[str, list[Path]]:
    """The two sets of scans: 1000 copies of the phantom's frames, and six 400-megapixel frames."""
    import cv2

    sources = sorted((study / "data/raw/phantom").rglob("*.png"))
    many = folder / "many"
    many.mkdir()
    for i in range(1000):
        shutil.copy(sources[i % len(sources)], many / f"scan{i:04d}.png")
    large = folder / "large"
    large.mkdir()
    frame = cv2.imread(str(sources[0]), cv2.IMREAD_GRAYSCALE)
    height = LARGE_SIDE * frame.shape[0] // frame.shape[1]
    big = cv2.resize(frame, (LARGE_SIDE, height), interpolation=cv2.INTER_NEAREST)
    big = cv2.copyMakeBorder(big, 0, LARGE_SIDE - height, 0, 0, cv2.BORDER_CONSTANT, value=0)
    for i in range(LARGE_COUNT):
        cv2.imwrite(str(large / f"large{i}.png"), np.roll(big, i * 997, axis=1))
    return {"1000 frames": [many], f"{LARGE_COUNT} frames of {LARGE_SIDE * LARGE_SIDE / 1e6:.0f} MP": [large]}


def timed_predict(study: Path, scans: list[Path], out: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one ``predict`` process run in ``study`` with its own code."""
    env = {**os.environ, "PYTHONPATH": str(study)}
    command = [sys.executable, "-m", "ultrasound_transfer", "predict", "--dataset", "phantom", "--model", "VGG16",
               "--out", str(out), *map(str, scans)]
    out.unlink(missing_ok=True)
    usage = timed_process(command, cwd=study, env=env, what="predict")
    return usage.seconds, usage.peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-rev", required=True, help="the commit to compare with (e.g. 9dda3ae)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="predict-memory-") as scratch:
        root = Path(scratch)
        studies = {"this tree": trained_copy(None, root / "this"),
                   args.baseline_rev: trained_copy(args.baseline_rev, root / "baseline")}
        sets = scan_sets(root, studies["this tree"])
        figures = {name: {label: {"seconds": [], "peak_mb": []} for label in studies} for name in sets}
        for _ in range(args.rounds):
            for name, scans in sets.items():
                for label, study in studies.items():
                    seconds, peak = timed_predict(study, scans, root / "out.csv")
                    figures[name][label]["seconds"].append(seconds)
                    figures[name][label]["peak_mb"].append(peak)
                    print(f"{name}, {label}: {seconds:.1f} s, {peak:.0f} MB", flush=True)
    rows = []
    for name, by_study in figures.items():
        this, base = by_study["this tree"], by_study[args.baseline_rev]
        rows.append([name, f"{min(this['seconds']):.1f}", f"{min(base['seconds']):.1f}",
                     f"{min(this['seconds']) / min(base['seconds']):.2f}×", f"{max(this['peak_mb']):.0f}",
                     f"{max(base['peak_mb']):.0f}", f"{max(this['peak_mb']) / max(base['peak_mb']):.2f}×"])
    table = markdown_table(rows, ["scans", "wall s, this tree", f"wall s, {args.baseline_rev}", "ratio",
                                  "peak MB, this tree", f"peak MB, {args.baseline_rev}", "ratio"])
    note = (f"`ultrasound-transfer predict` of a small trained study (VGG16, 32 px, 3 splits) as a whole process, "
            f"the working tree's code against commit {args.baseline_rev}'s, each in its own trained copy, run in "
            f"turn {args.rounds} times: the least wall time, the largest peak resident memory. One 400-megapixel "
            "gray frame decodes to 400 MB.")
    write_results("predict_memory", {"baseline": args.baseline_rev, "figures": figures}, {"predict_memory": table},
                  note=note, directory=args.results_dir)


if __name__ == "__main__":
    main()
