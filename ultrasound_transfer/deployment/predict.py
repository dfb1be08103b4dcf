"""``ultrasound-transfer predict``: the study's ensemble on new scans, one row per frame.

Each row gives the file, the frame (1 for a single image), its status, and
per classifier (``dense``: the networks' softmax heads; ``svm``: the linear
SVMs on their features) the ensemble's probability of malignant, the
operating point it is read at and the class called there (malignant when
the probability reaches the threshold), as ``external`` writes them for
another dataset; then the frame's novelty.

Status ``ok``; ``warning`` for a frame unlike the study's images (blank,
noise, or a novelty above the study's threshold:
:mod:`ultrasound_transfer.evaluation.novelty`),
whose call is given but is not to be relied on, the reason in ``note``;
``error`` for a file that could not be read, the reason in ``note`` (a file
is read whole or not at all: a cine loop that fails partway gets its error
row only).  The other files are still predicted, unless ``strict`` asks to stop at the
first; the command's exit status is non-zero when any file failed.

Frames stream through: each is decoded, made square and let go before the
next is read, and the squares go through the network a batch at a time, so
memory holds the largest single frame, not all of them.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
from tabulate import tabulate

from ultrasound_transfer.choices import CLASSIFIERS
from ultrasound_transfer.common import PipelineError, Stopwatch, log, write_atomic
from ultrasound_transfer.deployment.scans import ScanProblem, iter_scan_frames, network_square, scan_files
from ultrasound_transfer.deployment.trained import NOVELTY, TrainedNetwork, load_requested_network
from ultrasound_transfer.evaluation.novelty import NOVELTY_QUANTILE, frame_problem
from ultrasound_transfer.outputs.cv_results import class_column, prob_column, threshold_column

PREDICTIONS_DIR = Path("predictions")
# Frames per forward pass of the ensemble: inference holds no gradients, so more than training's batch fits.
PREDICT_BATCH = 64
# The first columns of every table predict writes: how an earlier output of this command is recognized.
LEADING_COLUMNS = ("file", "frame", "status", "note")
NOTE_WIDTH = 70           # characters of the note per line on the terminal (wrapped, never cut)


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


@dataclass(frozen=True)
class SquaredFrame:
    """A frame as the networks read it: where it came from, its square, and why it holds no image, if it does not."""

    file: str
    frame: int
    square: np.ndarray        # float32 (image_size, image_size), gray 0..255
    problem: str              # blank or noise (evaluation.novelty.frame_problem); empty for a frame that may be one


def squared_frames(files: list[Path], *, image_size: int, resize: str) -> Iterator[SquaredFrame | ScanProblem]:
    """Every frame of ``files`` made square as it is read (its full-size pixels let go at once), and every file
    that could not be read, in the order given."""
    for item in iter_scan_frames(files):
        if isinstance(item, ScanProblem):
            yield item
            continue
        squared = SquaredFrame(item.file, item.frame, network_square(item.gray, image_size=image_size, resize=resize),
                               frame_problem(item.gray))
        del item                # the full-size frame goes before the next is decoded
        yield squared


def in_batches(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of at most ``size`` (the last may be shorter)."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def array_batches(array: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """``array``'s rows in consecutive slices of at most ``size`` (views, not copies; the last may be shorter)."""
    for start in range(0, len(array), size):
        yield array[start:start + size]


def ensemble_probabilities(trained: TrainedNetwork, squares: np.ndarray) -> dict[str, np.ndarray]:
    """Each output of the ensemble network (``dense``, ``svm``, ``*_splits``, ``novelty``) for ``squares``,
    sent through it :data:`PREDICT_BATCH` at a time."""
    if not len(squares):
        return {}
    # Every call is the one a stream of frames makes, a batch at a time through predict_on_batch: it runs the
    # compiled step without predict's per-call set-up (a data adapter and callbacks, 80 ms a call on TensorFlow,
    # 1.3 s over 1000 frames in batches of 64), and a caller with more frames than a batch reuses the graphs
    # the batches traced, where Keras predict would trace its own (a tf.data feed, whose threads share the cores).
    batches = [trained.network.predict_on_batch(batch) for batch in array_batches(squares, PREDICT_BATCH)]
    return {name: np.concatenate([np.asarray(outputs[name], dtype=np.float64) for outputs in batches])
            for name in batches[0]}


def frame_warning(frame: SquaredFrame, novelty: float, threshold: float) -> str:
    """Why a frame is unlike the study's images (empty when it is not): the frame's own rules first, then the
    networks' novelty (:mod:`ultrasound_transfer.evaluation.novelty`)."""
    if frame.problem:
        return frame.problem
    if novelty > threshold:
        return (f"unlike the images the networks learned from (novelty {novelty:.2f}, above {threshold:.2f}, which "
                f"{NOVELTY_QUANTILE:.0%} of the study's held-out images stay under): the call is not to be relied on")
    return ""


def frame_rows(trained: TrainedNetwork, frames: list[SquaredFrame],
               outputs: dict[str, np.ndarray]) -> list[dict]:
    """One row per frame read: its status and note, and each classifier's probability, threshold and call."""
    benign, malignant = trained.class_names
    thresholds = trained.thresholds
    rows = []
    for i, frame in enumerate(frames):
        novelty = float(outputs[NOVELTY][i, 0])
        warning = frame_warning(frame, novelty, trained.novelty_threshold)
        row = {"file": frame.file, "frame": frame.frame, "status": "warning" if warning else "ok", "note": warning}
        for name in CLASSIFIERS:
            p = float(outputs[name][i, 0])
            row |= {prob_column(name, malignant): p, threshold_column(name): thresholds[name],
                    class_column(name): malignant if p >= thresholds[name] else benign}
        rows.append(row | {NOVELTY: novelty})
    return rows


def problem_row(problem: ScanProblem) -> dict:
    return {"file": problem.file, "frame": 0, "status": "error", "note": problem.error}


def is_own_output(path: Path) -> bool:
    """Whether ``path`` is a table this command wrote (its header starts with :data:`LEADING_COLUMNS`)."""
    try:
        with open(path, encoding="utf-8") as file:
            header = file.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return header.split(",")[:len(LEADING_COLUMNS)] == list(LEADING_COLUMNS)


def check_out_file(path: Path) -> None:
    """Refuse an ``--out`` that cannot become the CSV file, or would replace what is not this command's own:
    an existing folder, a path under a file, or any file that is not an earlier output of this command (a
    scan, ``params.yaml`` or a pipeline output never is)."""
    if path.is_dir():
        raise PipelineError(f"--out {path} is a folder; give the CSV file's name, "
                            f"e.g. --out {path / 'predictions.csv'}.")
    blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise PipelineError(f"--out {path}: {blocking} is a file, not a folder; choose another path.")
    if path.exists() and not is_own_output(path):
        raise PipelineError(f"--out {path} exists and is not a table this command wrote (its first line is not "
                            f"'{','.join(LEADING_COLUMNS)},...'); predict never replaces another file. Name a new "
                            "file, or move this one away.")


def printed_table(table: pd.DataFrame, malignant: str) -> str:
    """The columns a person reads on the terminal: file, frame, status, each probability and class, the note."""
    shown = table[["file", "frame", "status"] + [c for c in table.columns if c.endswith(f"_prob_{malignant}")
                                                 or c.endswith("_class")] + ["note"]]
    shown = shown.astype(object).where(shown.notna(), "")
    return tabulate(shown, headers="keys", tablefmt="simple", showindex=False, floatfmt=".3f",
                    maxcolwidths=[None] * (shown.shape[1] - 1) + [NOTE_WIDTH])


def run_predict(request: PredictRequest) -> pd.DataFrame:
    """Read the scans a batch at a time through the ensemble, write the table; raise (exit status 2) if any
    file failed."""
    check_out_file(request.out_file)
    files = scan_files(request.paths)
    if any(request.out_file.resolve() == given.resolve() for given in files):
        raise PipelineError(f"--out {request.out_file} is one of the scans being read; name a new file for the "
                            "table.")
    clock = Stopwatch()
    trained = load_requested_network(request.dataset, request.model, experiment=request.experiment,
                                     command="predict")
    rows, problems, network_s = [], [], 0.0
    stream = squared_frames(files, image_size=trained.image_size, resize=trained.resize)
    for batch in in_batches(stream, PREDICT_BATCH):
        for problem in (item for item in batch if isinstance(item, ScanProblem)):
            if request.strict:
                raise PipelineError(f"{problem.error} (--strict: stopped at the first file that cannot be read; "
                                    "nothing was written)")
            problems.append(problem)
        frames = [item for item in batch if isinstance(item, SquaredFrame)]
        started = time.perf_counter()
        outputs = ensemble_probabilities(trained, np.stack([f.square for f in frames]) if frames else np.zeros(0))
        network_s += time.perf_counter() - started
        read = iter(frame_rows(trained, frames, outputs))
        rows += [problem_row(item) if isinstance(item, ScanProblem) else next(read) for item in batch]
    # A file is read whole or not at all: a cine loop that fails at frame 40 gets its error row, not 39 calls.
    failed = {problem.file for problem in problems}
    rows = [row for row in rows if row["status"] == "error" or row["file"] not in failed]
    n_frames = sum(row["status"] != "error" for row in rows)
    if not n_frames:
        raise PipelineError(f"none of the {len(files)} files could be read; nothing was written. First: "
                            f"{problems[0].error}")
    table = pd.DataFrame(rows)
    table["dataset"], table["model"] = trained.dataset, trained.model_name
    log("predict", f"{request.dataset}/{request.model}: {n_frames} frames predicted "
                   f"({n_frames / max(network_s, 1e-9):.1f} frames/s through the network; {clock} in all)")
    write_atomic(request.out_file, lambda tmp: table.to_csv(tmp, index=False))
    print(printed_table(table, trained.class_names[1]), flush=True)
    log("predict", f"wrote {len(table)} rows to {request.out_file}")
    flagged = int((table["status"] == "warning").sum())
    if flagged:
        log("predict", f"warning: {flagged} of {n_frames} frames are unlike the images the networks learned from "
                       "(status warning; the note says why): do not rely on their calls")
    if problems:
        raise PipelineError(f"{len(problems)} of {len(files)} files could not be read (rows with status error in "
                            f"{request.out_file}); first: {problems[0].error}")
    return table
