"""Which reader reads a file, by its content, and its frames: the one rule for the pipeline and for ``predict``.

A hospital's files come as PNG, BMP or JPEG exports, or as DICOM, often
without a suffix (a PACS export names them ``IM000001``).  So a file is
DICOM when bytes 128..131 are ``DICM`` whatever its name; a ``.dcm`` /
``.dicom`` file without the marker is read as a raw DICOM data set; a file
without a suffix is tried as a raw data set and, failing that, as an image
(where it is named: on the command line, or in a table; in a folder only a
file with the marker or a DICOM suffix counts, :func:`file_kind`); any other
file with an image suffix is an image.  A ``DICOMDIR`` (an export's
index, by its name or its SOP class) holds no image.  A DICOM file's frames
are read one at a time (:mod:`ultrasound_transfer.data.dicom`), an image
file's one frame by :func:`ultrasound_transfer.data.imaging.read_frame`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.dicom import (
    DICOM_SUFFIXES,
    NotDicom,
    coloured_dicom_frame,
    is_dicom,
    is_dicomdir,
    iter_coloured_dicom_frames,
    open_dicom,
)
from ultrasound_transfer.data.imaging import IMAGE_SUFFIXES, read_frame


def file_kind(path: Path) -> str:
    """``scan`` (an image or DICOM file, to read), ``dicomdir`` or ``other``, by the module's rules.

    A file that cannot be opened counts as a scan, so reading it reports why.
    """
    if path.name.upper() == "DICOMDIR":
        return "dicomdir"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "scan"
    try:
        if is_dicom(path):
            return "dicomdir" if is_dicomdir(path) else "scan"
    except OSError:
        return "scan"
    return "scan" if path.suffix.lower() in DICOM_SUFFIXES else "other"


def reads_as_dicom(path: Path) -> bool:
    """Whether the DICOM reader reads ``path`` (its ``DICM`` marker, or a DICOM suffix)."""
    return path.suffix.lower() in DICOM_SUFFIXES or is_dicom(path)


def unsuffixed_frames(path: Path, *, measure_colour: bool = True) -> Iterator[tuple[np.ndarray, float]]:
    """The frames of a file without suffix and without the DICM marker: a raw DICOM data set, else an image."""
    try:
        return iter_coloured_dicom_frames(path, measure_colour=measure_colour)
    except NotDicom as not_dicom:
        try:
            return iter([read_frame(path)])
        except PipelineError:
            raise PipelineError(f"{path}: neither an image file (no PNG, BMP or JPEG that OpenCV decodes) nor a "
                                "DICOM file (no 'DICM' marker at bytes 128..131, and not readable as a raw DICOM "
                                f"data set: {not_dicom.reason}). Replace or remove it.") from None


def coloured_frames(path: Path, *, measure_colour: bool = True) -> Iterator[tuple[np.ndarray, float]]:
    """Each frame of one file as 2-D uint8 gray with the share of its pixels in colour, one at a time (a DICOM
    frame's colour left unmeasured, 0, where ``measure_colour`` is false).

    A file refused as a whole is refused at the call; a frame that cannot be
    decoded, when the iteration reaches it.
    """
    path = Path(path)
    if reads_as_dicom(path):
        return iter_coloured_dicom_frames(path, measure_colour=measure_colour)
    if not path.suffix:
        return unsuffixed_frames(path, measure_colour=measure_colour)
    return iter([read_frame(path)])


def scan_frames(path: Path) -> Iterator[np.ndarray]:
    """The gray frames of one file, one at a time (:func:`coloured_frames` without the colour)."""
    frames = coloured_frames(path, measure_colour=False)
    return (gray for gray, _ in frames)


def frame_count(path: Path) -> int:
    """How many frames a file holds, by the reader :func:`coloured_frames` gives it: its header's count for a
    DICOM file (a raw data set without suffix too), 1 for an image file, and 1 for a file that cannot be read
    or whose header cannot (reading it later says why, under ``normalize.on_undecodable``)."""
    path = Path(path)
    try:
        if not reads_as_dicom(path) and path.suffix:
            return 1
        return open_dicom(path).n_frames
    except (PipelineError, OSError):
        return 1


def coloured_frame(path: Path, index: int) -> tuple[np.ndarray, float]:
    """Frame ``index`` (1-based) of one file alone, gray with its share of colour: a DICOM file's frame read by
    itself (past one its decoder failed on), an image file's one frame."""
    path = Path(path)
    if reads_as_dicom(path) or not path.suffix:
        try:
            return coloured_dicom_frame(path, index)
        except NotDicom:
            if path.suffix:
                raise
    return read_frame(path)
