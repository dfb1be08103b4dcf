"""New scans, from the files a person names to the square gray frames the study's networks read.

Each file goes through the functions ``normalize`` used for the study's own
images, never a copy of them: :func:`ultrasound_transfer.data.imaging.read_gray`
(PNG, BMP, JPEG; 8/16-bit, gray or colour) or, for DICOM,
:func:`ultrasound_transfer.data.dicom.iter_dicom_frames`, then
:func:`ultrasound_transfer.data.imaging.fit_square` with the study's
``image_size`` and ``normalize.resize``.  The network's own
``preprocess_input`` is the ensemble network's first layer
(:mod:`ultrasound_transfer.deployment.trained`).

Which files are scans (the rules of :mod:`ultrasound_transfer.data.frames`, which ``normalize`` reads a
dataset's files by too):

* a file named on the command line is read whatever its suffix: as DICOM
  when bytes 128..131 are ``DICM`` (scanners often write no suffix); as a
  raw DICOM data set (no preamble, read with pydicom's ``force=True``) when
  it is named ``.dcm`` / ``.dicom``; with no suffix, as a raw DICOM data set
  and, failing that, as an image; with any other suffix, as an image;
* a folder stands for the scans inside it, at any depth, in sorted order:
  its image files (``.png``, ``.bmp``, ``.jpg``, ``.jpeg``), its ``.dcm`` /
  ``.dicom`` files, and every file whose content is DICOM (the ``DICM``
  marker; only the first 132 bytes are read), as a PACS export names them
  ``IM000001``.  A ``DICOMDIR`` (the index of such an export: by its name,
  or by its SOP class) holds no image and is left out, as are all other
  files; one line (logged by :func:`scan_files`) says how many were left out
  and why, with up to three of their names.  A folder without a single scan
  stops the command, saying how many files it held.

Reading: :func:`iter_scan_frames` yields the frames one at a time (a DICOM
cine loop frame by frame), so memory stays bounded by the largest single
frame however many files are given; :func:`read_scans` collects them in a
list for the callers that want them all.  A file that cannot be read becomes
a :class:`ScanProblem` row (its message names the file and the fix), so one
bad file among many does not stop the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ultrasound_transfer.common import PipelineError, log
from ultrasound_transfer.data.dicom import DICOM_SUFFIXES
from ultrasound_transfer.data.frames import file_kind, scan_frames
from ultrasound_transfer.data.imaging import IMAGE_SUFFIXES, fit_square

SCAN_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
NOT_A_SCAN = f"neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a DICOM file (checked by content)"
DICOMDIR_INDEX = "a DICOMDIR index, which lists images but holds none"
EXAMPLES = 3


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


@dataclass(frozen=True)
class FolderScans:
    """What a folder holds: its scans, and the files left out (not a scan; a DICOMDIR index)."""

    scans: list[Path]
    not_scans: list[Path]
    dicomdirs: list[Path]

    @property
    def total(self) -> int:
        return len(self.scans) + len(self.not_scans) + len(self.dicomdirs)


def folder_scans(folder: Path) -> FolderScans:
    """The files under ``folder`` (at any depth, sorted), sorted into scans and files left out."""
    kinds: dict[str, list[Path]] = {"scan": [], "other": [], "dicomdir": []}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        kinds[file_kind(path)].append(path)
    return FolderScans(kinds["scan"], kinds["other"], kinds["dicomdir"])


def examples(folder: Path, paths: list[Path]) -> str:
    """Up to :data:`EXAMPLES` of ``paths``, named relative to ``folder``."""
    return ", ".join(p.relative_to(folder).as_posix() for p in paths[:EXAMPLES])


def left_out_line(folder: Path, found: FolderScans) -> str | None:
    """One line on the files of ``folder`` that are not read: how many, why, up to three names; None if none."""
    left_out = sorted(found.not_scans + found.dicomdirs)
    if not left_out or not found.scans:
        return None
    reasons = [f"{len(paths)} {reason}" for paths, reason in ((found.not_scans, NOT_A_SCAN),
                                                              (found.dicomdirs, DICOMDIR_INDEX)) if paths]
    return (f"{folder}: left out {len(left_out)} of its {found.total} files ({'; '.join(reasons)}), "
            f"e.g. {examples(folder, left_out)}")


def no_scans_message(folder: Path, found: FolderScans) -> str:
    """The refusal of a folder without a single scan: how many files it held, and what they were not."""
    if not found.total:
        return f"{folder} holds no files; name another folder, or the files themselves."
    files = "file" if found.total == 1 else "files"
    index = f" ({len(found.dicomdirs)} {DICOMDIR_INDEX})" if found.dicomdirs else ""
    left_out = examples(folder, sorted(found.not_scans + found.dicomdirs))
    return (f"{folder} holds {found.total} {files}, none an image ({', '.join(IMAGE_SUFFIXES)}) or a DICOM file "
            f"(checked by content){index}: e.g. {left_out}. Name another folder, or the files themselves.")


def scan_files(paths: list[str | Path]) -> list[Path]:
    """The files that ``paths`` name: files as given, folders expanded to their scans; refused when empty.

    A path that does not exist, or a folder without a single scan, is an
    error that stops the command before any network is built.  The files a
    folder holds that are not read are logged, one line per folder.
    """
    if not paths:
        raise PipelineError("no scans given; name image or DICOM files, or folders holding them.")
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_file():
            files.append(given)
        elif given.is_dir():
            found = folder_scans(given)
            if not found.scans:
                raise PipelineError(no_scans_message(given, found))
            if line := left_out_line(given, found):
                log("scans", line)
            files.extend(found.scans)
        else:
            raise PipelineError(f"{given}: no such file or folder.")
    return files


def read_scan(path: Path) -> list[np.ndarray]:
    """The gray frames of one file: every frame of a DICOM file, the one frame of an image file."""
    return list(scan_frames(path))


def problem(path: Path, error: Exception) -> ScanProblem:
    """The row of a file that could not be read (a :class:`PipelineError` or an ``OSError``)."""
    if isinstance(error, PipelineError):
        return ScanProblem(str(path), str(error))
    return ScanProblem(str(path), f"{path}: cannot be read ({getattr(error, 'strerror', None) or error}).")


def iter_scan_frames(files: list[Path]) -> Iterator[Frame | ScanProblem]:
    """Every frame of ``files`` in order, one at a time, and a :class:`ScanProblem` for each file that cannot be
    read; only one frame is held at a time (a DICOM cine loop is read frame by frame).

    A problem found partway through a file (a frame the decoder fails on)
    comes after that file's earlier frames; a caller that wants each file
    whole or not at all drops them (:func:`read_scans` does).
    """
    for path in files:
        try:
            for number, gray in enumerate(scan_frames(path), start=1):
                yield Frame(str(path), number, gray)
                del gray                # hold no frame while the next is read
        except (PipelineError, OSError) as error:
            yield problem(path, error)


def read_scans(files: list[Path]) -> tuple[list[Frame], list[ScanProblem]]:
    """Every frame of ``files``, and the files that could not be read (each with its message).

    A file is kept whole or not at all: the frames of a file that fails
    partway are dropped, and the file is one problem row.
    """
    frames: list[Frame] = []
    problems: list[ScanProblem] = []
    for item in iter_scan_frames(files):
        if isinstance(item, ScanProblem):
            while frames and frames[-1].file == item.file:      # its frames come just before it
                frames.pop()
            problems.append(item)
        else:
            frames.append(item)
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
