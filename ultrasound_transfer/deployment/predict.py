"""``ultrasound-transfer predict``: the study's ensemble on new scans, one row per frame.

Each row gives the file, the frame (1 for a single image), and per classifier
(``dense``: the networks' softmax heads; ``svm``: the linear SVMs on their
features) the ensemble's probability of malignant, the operating point it is
read at and the class called there (malignant when the probability reaches
the threshold), as ``external`` writes them for another dataset.  A file that
could not be read gets a row with ``status: error`` and the message; the
others are still predicted, unless ``strict`` asks to stop at the first.
The command's exit status is non-zero when any file failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.common import PipelineError, Stopwatch, log, write_atomic
from ultrasound_transfer.deployment.scans import Frame, ScanProblem, network_squares, read_scans, scan_files
from ultrasound_transfer.deployment.trained import CLASSIFIERS, TrainedNetwork, load_requested_network

PREDICTIONS_DIR = Path("predictions")
# Images per forward pass of the ensemble: inference holds no gradients, so more than training's batch fits.
PREDICT_BATCH = 64


@dataclass(frozen=True)
class PredictRequest:
    """What ``ultrasound-transfer predict`` was asked."""

    dataset: str
    model: str
    paths: list[str]
    out: Path | None = None           # default predictions/<dataset>-<model>.csv
    experiment: str | None = None     # a DVC experiment's networks instead of the workspace's
    strict: bool = False              # stop at the first file that cannot be read

    @property
    def out_file(self) -> Path:
        return self.out or PREDICTIONS_DIR / f"{self.dataset}-{self.model}.csv"


def ensemble_probabilities(trained: TrainedNetwork, squares: np.ndarray) -> dict[str, np.ndarray]:
    """Per output of the ensemble network (``dense``, ``svm``, ``*_splits``), its values for ``squares``."""
    if not len(squares):
        return {}
    outputs = trained.network.predict(squares, batch_size=PREDICT_BATCH, verbose=0)
    return {name: np.asarray(values, dtype=np.float64) for name, values in outputs.items()}


def prediction_rows(trained: TrainedNetwork, frames: list[Frame], problems: list[ScanProblem],
                    probabilities: dict[str, np.ndarray]) -> pd.DataFrame:
    """The table: one row per frame read, one per file that could not be, in the order the files were given."""
    benign, malignant = trained.class_names
    thresholds = trained.thresholds
    rows = []
    for i, frame in enumerate(frames):
        row = {"file": frame.file, "frame": frame.frame, "status": "ok", "error": ""}
        for name in CLASSIFIERS:
            p = float(probabilities[name][i, 0])
            row |= {f"{name}_prob_{malignant}": p, f"{name}_threshold": thresholds[name],
                    f"{name}_class": malignant if p >= thresholds[name] else benign}
        rows.append(row)
    rows += [{"file": p.file, "frame": 0, "status": "error", "error": p.error} for p in problems]
    order = {file: n for n, file in enumerate(dict.fromkeys([*(f.file for f in frames), *(p.file for p in problems)]))}
    table = pd.DataFrame(rows)
    table["dataset"], table["model"] = trained.dataset, trained.model_name
    return table.sort_values(["file", "frame"], key=lambda c: c.map(order) if c.name == "file" else c,
                             kind="stable").reset_index(drop=True)


def check_out_file(path: Path) -> None:
    """Refuse an ``--out`` that cannot become the CSV file: an existing folder, or a path under a file."""
    if path.is_dir():
        raise PipelineError(f"--out {path} is a folder; give the CSV file's name, "
                            f"e.g. --out {path / 'predictions.csv'}.")
    blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise PipelineError(f"--out {path}: {blocking} is a file, not a folder; choose another path.")


def printed_table(table: pd.DataFrame, malignant: str) -> str:
    """The columns a person reads on the terminal (file, frame, status, each probability and class)."""
    shown = table[["file", "frame", "status"] + [c for c in table.columns if c.endswith(f"_prob_{malignant}")
                                                 or c.endswith("_class")]]
    return tabulate(shown, headers="keys", tablefmt="simple", showindex=False, floatfmt=".3f", missingval="")


def run_predict(request: PredictRequest) -> pd.DataFrame:
    """Read the scans, load the ensemble, write the table; raise (exit status 2) if any file failed."""
    check_out_file(request.out_file)
    files = scan_files(request.paths)
    frames, problems = read_scans(files)
    if problems and request.strict:
        raise PipelineError(f"{problems[0].error} (--strict: stopped at the first file that cannot be read; "
                            "nothing was written)")
    if not frames:
        raise PipelineError(f"none of the {len(files)} files could be read; nothing was written. First: "
                            f"{problems[0].error}")
    clock = Stopwatch()
    trained = load_requested_network(request.dataset, request.model, experiment=request.experiment)
    squares = network_squares(frames, image_size=trained.image_size, resize=trained.settings.normalize.resize)
    started = time.perf_counter()
    probabilities = ensemble_probabilities(trained, squares)
    rate = len(frames) / max(time.perf_counter() - started, 1e-9)
    log("predict", f"{request.dataset}/{request.model}: {len(frames)} frames predicted "
                   f"({rate:.1f} frames/s; {clock} in all)")
    table = prediction_rows(trained, frames, problems, probabilities)
    write_atomic(request.out_file, lambda tmp: table.to_csv(tmp, index=False))
    print(printed_table(table, trained.class_names[1]), flush=True)
    log("predict", f"wrote {len(table)} rows to {request.out_file}")
    if problems:
        raise PipelineError(f"{len(problems)} of {len(files)} files could not be read (rows with status error in "
                            f"{request.out_file}); first: {problems[0].error}")
    return table
