"""New scans, from the files a person names to the square gray frames the study's networks read.

Each file goes through the functions ``normalize`` used for the study's own
images, never a copy of them: :func:`ultrasound_transfer.data.imaging.read_gray`
(PNG, BMP, JPEG; 8/16-bit, gray or colour) or, for DICOM,
:func:`ultrasound_transfer.data.dicom.read_dicom_frames`, then
:func:`ultrasound_transfer.data.imaging.fit_square` with the study's
``image_size`` and ``normalize.resize``.  The network's own
``preprocess_input`` is the ensemble network's first layer
(:mod:`ultrasound_transfer.deployment.trained`).

A folder stands for the image and DICOM files inside it, at any depth, in
sorted order; a file named on the command line is read whatever its suffix
(a DICOM file is known by its ``DICM`` marker, as scanners often write no
suffix).  A file that cannot be read becomes a :class:`ScanProblem` row, so
one bad file among many does not stop the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.dicom import DICOM_SUFFIXES, is_dicom, read_dicom_frames
from ultrasound_transfer.data.imaging import IMAGE_SUFFIXES, fit_square, read_gray

SCAN_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES


@dataclass(frozen=True)
class Frame:
    """One frame to read: the file it came from, its number in that file (1 for a single image), its gray pixels."""

    file: str
    frame: int
    gray: np.ndarray


@dataclass(frozen=True)
class ScanProblem:
    """A file that could not be read, and why (the message names the file and the fix)."""

    file: str
    error: str


def scan_files(paths: list[str | Path]) -> list[Path]:
    """The files that ``paths`` name: files as given, folders expanded to their scans; refused when empty.

    A path that does not exist, or a folder without a single image or DICOM
    file, is an error that stops the command before any network is built.
    """
    if not paths:
        raise PipelineError("no scans given; name image or DICOM files, or folders holding them.")
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_file():
            files.append(given)
        elif given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in SCAN_SUFFIXES)
            if not found:
                raise PipelineError(f"{given} holds no image or DICOM file ({', '.join(SCAN_SUFFIXES)}); "
                                    "name another folder, or the files themselves.")
            files.extend(found)
        else:
            raise PipelineError(f"{given}: no such file or folder.")
    return files


def read_scan(path: Path) -> list[np.ndarray]:
    """The gray frames of one file: every frame of a DICOM file, the one frame of an image file."""
    if is_dicom(path):
        return read_dicom_frames(path)
    return [read_gray(path)]


def read_scans(files: list[Path]) -> tuple[list[Frame], list[ScanProblem]]:
    """Every frame of ``files``, and the files that could not be read (each with its message)."""
    frames, problems = [], []
    for path in files:
        try:
            frames += [Frame(str(path), number, gray) for number, gray in enumerate(read_scan(path), start=1)]
        except PipelineError as problem:
            problems.append(ScanProblem(str(path), str(problem)))
        except OSError as error:
            problems.append(ScanProblem(str(path), f"{path}: cannot be read ({error.strerror or error})."))
    return frames, problems


def check_output_folder(folder: Path, *, marker: str, option: str = "--out") -> None:
    """Refuse to replace a folder that is not this command's own earlier output.

    The folder is written whole (``atomic_dir``), which replaces what was there;
    so it must be new, or hold ``marker`` (the file the command writes into
    each output), and must not hold the working directory.
    """
    folder = folder.absolute()
    if Path.cwd().absolute().is_relative_to(folder):
        raise PipelineError(f"{option} {folder} holds the working directory; the command replaces that folder "
                            "whole. Name a new folder.")
    if folder.exists() and not (folder / marker).is_file():
        raise PipelineError(f"{option} {folder} exists and is not an output of this command (no {marker} in it); "
                            "the command replaces that folder whole. Name a new folder, or remove this one.")


def network_square(gray: np.ndarray, *, image_size: int, resize: str) -> np.ndarray:
    """A gray frame as the study's square (``normalize.resize``), float32 0..255: the ensemble network's input."""
    square, _ = fit_square(gray, image_size, resize)
    return square.astype(np.float32)


def network_squares(frames: list[Frame], *, image_size: int, resize: str) -> np.ndarray:
    """All frames as one (N, image_size, image_size) float32 stack."""
    if not frames:
        return np.zeros((0, image_size, image_size), np.float32)
    return np.stack([network_square(f.gray, image_size=image_size, resize=resize) for f in frames])
