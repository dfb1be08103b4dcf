"""DICOM files as the study's gray frames, through pydicom (the DICOM standard, PS3.3 C.7.6.3: image pixel module).

What is read: the pixel data and the attributes that say how to interpret it
(photometric interpretation, bits stored, pixel representation, number of
frames), and the flag for text burned into the pixels (below).  Nothing else
of the header is read, so no patient, study or device identifier can reach an
output or a log line.

How a stored value becomes gray, as the study's PNG frames are gray:

* ``MONOCHROME2`` (0 is black) as it is; ``MONOCHROME1`` (0 is white) inverted;
* ``RGB``, and ``YBR_FULL`` / ``YBR_FULL_422`` (converted to RGB by pydicom),
  to gray by the ITU-R BT.601 weights, as colour PNGs are
  (:func:`ultrasound_transfer.data.imaging.gray_frame`); ``YBR_ICT`` / ``YBR_RCT``
  come as RGB from the JPEG 2000 decoder; for ``YBR_PARTIAL_*`` the luma
  channel, which is that gray, is taken, rescaled from 16..235 to 0..255;
* values spread linearly from ``0 .. 2**BitsStored - 1`` onto 0..255 (a
  signed range is shifted first).  No VOI window or modality LUT is applied:
  ultrasound stores display values, and a window would change what the
  network sees relative to its training images, which carried none.

A multi-frame file (a cine loop) gives one frame per stored frame, numbered
from 1; each is read on its own.  A compressed transfer syntax that no
installed pydicom plugin decodes is refused naming the file and the packages
that would decode it; a header that pydicom cannot parse (a truncated or
malformed element) is refused naming the file.

The header keeps identifiers out of outputs; the pixels may not.  Scanners
often burn the patient's name or the date into the image itself, which the
header flags as ``BurnedInAnnotation`` (0028,0301) ``YES``; such a file is
read, with a warning, since anything drawn from its pixels (Grad-CAM
overlays) shows that text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ultrasound_transfer.common import PipelineError, log
from ultrasound_transfer.data.imaging import gray_frame

DICOM_SUFFIXES = (".dcm", ".dicom")
PREAMBLE_BYTES = 128
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# Photometric interpretations whose pixels pydicom (or the decoder) hands over as RGB.
AS_RGB = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
PARTIAL_LUMA = ("YBR_PARTIAL_420", "YBR_PARTIAL_422")
# What pydicom raises on a header element it parses lazily (on first access) and finds malformed: a value of
# the wrong length or type, a missing file meta group, a number too large for its field.
MALFORMED_HEADER = (AttributeError, KeyError, TypeError, ValueError, IndexError, OverflowError, struct.error,
                    EOFError, OSError)


def is_dicom(path: Path | str) -> bool:
    """True for a DICOM Part 10 file: 128 bytes of preamble, then ``DICM`` (whatever the file's name)."""
    with open(path, "rb") as file:
        head = file.read(PREAMBLE_BYTES + 4)
    return head[PREAMBLE_BYTES:] == b"DICM"


def check_decodable(syntax, path: Path) -> None:
    """Refuse pixel data in transfer syntax ``syntax`` (a pydicom UID) where no installed plugin decodes it,
    naming what would."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise PipelineError(f"{path}: transfer syntax {syntax.name} ({syntax}) has no pixel decoder in pydicom; "
                            "convert the file to an uncompressed or JPEG transfer syntax.") from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a pydicom pixel-data plugin"
        raise PipelineError(f"{path}: its pixels are compressed as {syntax.name} ({syntax}), which no installed "
                            f"package decodes. Install one of: {needs} (e.g. pip install pylibjpeg "
                            "pylibjpeg-libjpeg pylibjpeg-openjpeg), or convert the file to an uncompressed "
                            "transfer syntax.")


def spread_to_uint8(values: np.ndarray, *, bits_stored: int, signed: bool, invert: bool) -> np.ndarray:
    """Stored values of ``bits_stored`` bits onto 0..255, linearly; ``invert`` for MONOCHROME1."""
    values = values.astype(np.float64)
    if signed:
        values = values + 2.0 ** (bits_stored - 1)
    top = 2.0**bits_stored - 1
    values = np.clip(values, 0, top)
    if invert:
        values = top - values
    return np.round(values * (255.0 / top)).astype(np.uint8)


@dataclass(frozen=True)
class PixelHeader:
    """The header attributes that say how to read the pixels (and nothing that identifies anyone)."""

    transfer_syntax: str          # a pydicom UID
    photometric: str
    n_frames: int
    colour: bool
    bits_stored: int | None       # None: the pixel type's full width
    signed: bool
    has_pixels: bool
    burned_in_annotation: bool


def pixel_header(dataset) -> PixelHeader:
    """Read every header attribute the pixels need, at once (pydicom parses each element on first access)."""
    bits = dataset.get("BitsStored")
    return PixelHeader(transfer_syntax=dataset.file_meta.TransferSyntaxUID,
                       photometric=str(dataset.get("PhotometricInterpretation", "MONOCHROME2")),
                       n_frames=int(dataset.get("NumberOfFrames", 1) or 1),
                       colour=int(dataset.get("SamplesPerPixel", 1)) == 3,
                       bits_stored=None if bits is None else int(bits),
                       signed=int(dataset.get("PixelRepresentation", 0)) == 1,
                       has_pixels="PixelData" in dataset,
                       burned_in_annotation=str(dataset.get("BurnedInAnnotation", "")).upper() == "YES")


def read_dicom_frames(path: Path | str) -> list[np.ndarray]:
    """Every frame of a DICOM file as 2-D uint8 gray (see the module's rules), or a clear refusal."""
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError
    from pydicom.pixels import pixel_array

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=False)
        header = pixel_header(dataset)
    except (InvalidDicomError, BytesLengthException, *MALFORMED_HEADER) as error:
        raise PipelineError(f"{path}: not a readable DICOM file ({type(error).__name__}: {error}). "
                            "Replace or remove it.") from None
    if header.burned_in_annotation:
        log("dicom", f"warning: {path}: BurnedInAnnotation is YES: the pixels may show patient text, which "
                     "overlays made from them (explain) reproduce.")
    if not header.has_pixels:
        raise PipelineError(f"{path}: the DICOM file holds no image (no Pixel Data: a report or a header only). "
                            "Give the image series instead.")
    check_decodable(header.transfer_syntax, path)
    photometric = header.photometric
    if photometric not in MONOCHROME + AS_RGB + PARTIAL_LUMA:
        raise PipelineError(f"{path}: photometric interpretation {photometric} is not read here (palette colour "
                            "and others carry no gray scale); export the frames as MONOCHROME2 or RGB.")
    try:
        pixels = pixel_array(dataset)
    except Exception as error:  # noqa: BLE001 - a decoder's own error, re-raised naming the file
        raise PipelineError(f"{path}: pydicom could not decode the pixels ({type(error).__name__}: {error}). "
                            "The file is damaged or its header does not match its pixel data.") from None
    n_frames, colour, signed = header.n_frames, header.colour, header.signed
    frames = pixels if n_frames > 1 else pixels[None]
    bits = header.bits_stored or pixels.dtype.itemsize * 8
    gray = []
    for index, frame in enumerate(frames, start=1):
        source = f"{path} frame {index}" if n_frames > 1 else path
        if photometric in PARTIAL_LUMA:
            luma = np.clip((frame[..., 0].astype(np.float64) - 16) * 255.0 / 219.0, 0, 255)
            gray.append(gray_frame(np.round(luma).astype(np.uint8), source, channel_order="RGB"))
            continue
        values = spread_to_uint8(frame, bits_stored=bits, signed=signed, invert=photometric == "MONOCHROME1")
        gray.append(gray_frame(values, source, channel_order="RGB" if colour else "gray"))
    return gray
