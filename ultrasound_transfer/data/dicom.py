"""DICOM files as the study's gray frames, through pydicom (the DICOM standard, PS3.3 C.7.6.3: image pixel module).

What is read: the pixel data and the attributes that say how to interpret it
(photometric interpretation, bits stored, pixel representation, number of
frames), the SOP class (to name what a file without pixels is), and the flag
for text burned into the pixels (below).  Nothing else of the header is read,
and pydicom's own warnings and log lines (which may quote a header value) are
kept off the terminal, so no patient, study or device identifier can reach
an output or a log line.

Which files: a DICOM Part 10 file (128 bytes of preamble, then ``DICM``,
whatever its name), or a raw DICOM data set without that preamble (older
systems write them), which pydicom reads with ``force=True``.  A raw data set
must parse as data elements in ascending tag order, each within the file;
anything else is refused as not DICOM, naming the file.

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

Memory: the header is parsed with the pixel data left on disk, and the frames
are then read from the file one at a time (:func:`iter_dicom_frames`), so a
cine loop of hundreds of frames is never held whole; each frame is numbered
from 1.  The one exception is a deflated data set (rare for images): a
deflate stream has no frame boundaries, so pydicom inflates it whole.

What is refused, each naming the file and the fix: a file cut short (it ends
inside its file meta information, inside a header element or its tag, inside
its pixel data, or right after a header that describes an image; pydicom
itself reads most such files without complaint, so the element lengths are
checked against the file's size); a file that parses completely but holds no
Pixel Data (named by its SOP class, e.g. a Basic Text SR, or as a DICOMDIR
index); a header that pydicom cannot parse; uncompressed pixel data shorter
than the header declares; a compressed transfer syntax that no installed
pydicom plugin decodes (naming the packages that would).  These are found
before any frame is read.  A frame the decoder fails on, or compressed pixel
data holding fewer frames than declared, is found only when the reading gets
there, after the frames before it.

The header keeps identifiers out of outputs; the pixels may not.  Scanners
often burn the patient's name or the date into the image itself, which the
header flags as ``BurnedInAnnotation`` (0028,0301) ``YES``; such a file is
read, with a warning, since anything drawn from its pixels (Grad-CAM
overlays) shows that text.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ultrasound_transfer.common import PipelineError, log
from ultrasound_transfer.data.imaging import colour_share, gray_frame

DICOM_SUFFIXES = (".dcm", ".dicom")
PREAMBLE_BYTES = 128
MARKER = b"DICM"
# Header values longer than this (the pixel data, as a rule) stay on disk while the header is parsed.
DEFER_BYTES = 4096
# The SOP class of a DICOMDIR, the index file of a DICOM media export (PS3.10 section 8.6).
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)    # Float, Double Float and (plain) Pixel Data
UNDEFINED_LENGTH = 0xFFFFFFFF
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# Photometric interpretations whose pixels pydicom (or the decoder) hands over as RGB.
AS_RGB = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
PARTIAL_LUMA = ("YBR_PARTIAL_420", "YBR_PARTIAL_422")
# What pydicom raises on a header element it parses lazily (on first access) and finds malformed: a value of
# the wrong length or type, a missing file meta group, a number too large for its field.
MALFORMED_HEADER = (AttributeError, KeyError, TypeError, ValueError, IndexError, OverflowError, struct.error,
                    EOFError, OSError)
COPY_AGAIN = "it was probably cut short in copying. Copy it again from the scanner, archive or disk it came from."


class NotDicom(PipelineError):
    """A file without the ``DICM`` marker that pydicom could not read as a raw DICOM data set either."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: no DICOM preamble and 'DICM' marker (bytes 128..131), and it could not be read "
                         f"as a raw DICOM data set either ({reason}). If it is a DICOM file, it is damaged or cut "
                         "short: copy or export it again (as a DICOM Part 10 file); otherwise replace or remove it.")


def is_dicom(path: Path | str) -> bool:
    """True for a DICOM Part 10 file: 128 bytes of preamble, then ``DICM`` (whatever the file's name).

    Only the first 132 bytes are read.
    """
    with open(path, "rb") as file:
        head = file.read(PREAMBLE_BYTES + len(MARKER))
    return head[PREAMBLE_BYTES:] == MARKER


def is_dicomdir(path: Path | str) -> bool:
    """True for a DICOMDIR, which indexes a DICOM export and holds no image: by its name, or by its SOP class.

    The SOP class is read from the file meta information of a Part 10 file
    only (a few hundred bytes); a file whose meta information cannot be
    parsed is not called a DICOMDIR here (reading it says what is wrong).
    """
    path = Path(path)
    if path.name.upper() == "DICOMDIR":
        return True
    if not is_dicom(path):
        return False
    from pydicom.filereader import read_file_meta_info

    try:
        with quiet_pydicom():
            meta = read_file_meta_info(path)
        return str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY
    except Exception:  # noqa: BLE001 - any parse error: not known to be a DICOMDIR; reading the file reports it
        return False


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
    sop_class: str = ""           # the SOP class UID ("" when the file gives none)
    raw: bool = False             # a raw data set (no preamble, no DICM marker; the syntax was inferred)
    size: tuple[int, int] | None = None     # (columns, rows) where the header describes an image


def transfer_syntax(dataset, *, raw: bool):
    """The data set's transfer syntax (a pydicom UID): from its file meta information, or for a raw data set
    without one, the encoding pydicom found (implicit or explicit VR, little or big endian)."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if not raw or "TransferSyntaxUID" in dataset.file_meta:
        return dataset.file_meta.TransferSyntaxUID     # AttributeError when a Part 10 file lacks it
    implicit, little_endian = dataset.original_encoding[:2]
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian


def pixel_header(dataset, *, raw: bool = False) -> PixelHeader:
    """Read every header attribute the pixels need, at once (pydicom parses each element on first access)."""
    bits = dataset.get("BitsStored")
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    sop_class = dataset.get("SOPClassUID") or dataset.file_meta.get("MediaStorageSOPClassUID") or ""
    return PixelHeader(transfer_syntax=transfer_syntax(dataset, raw=raw),
                       photometric=str(dataset.get("PhotometricInterpretation", "MONOCHROME2")),
                       n_frames=int(dataset.get("NumberOfFrames", 1) or 1),
                       colour=int(dataset.get("SamplesPerPixel", 1)) == 3,
                       bits_stored=None if bits is None else int(bits),
                       signed=int(dataset.get("PixelRepresentation", 0)) == 1,
                       has_pixels="PixelData" in dataset,
                       burned_in_annotation=str(dataset.get("BurnedInAnnotation", "")).upper() == "YES",
                       sop_class=str(sop_class), raw=raw,
                       size=(int(columns), int(rows)) if rows and columns else None)


def file_position(element) -> int | None:
    """Where ``element``'s value starts in the file (None for an element pydicom made or converted itself)."""
    position = getattr(element, "value_tell", None)
    return getattr(element, "file_tell", None) if position is None else position


def placed_elements(dataset) -> list:
    """The data set's top-level elements that pydicom read from the file, as read (raw), in file order."""
    elements = [dataset.get_item(tag, keep_deferred=True) for tag in dataset.keys()]
    return sorted((e for e in elements if file_position(e) is not None), key=file_position)


def defined_end(element) -> int | None:
    """The file offset just past ``element``'s value, or None for a value of undefined length."""
    length = getattr(element, "length", UNDEFINED_LENGTH)
    return None if length == UNDEFINED_LENGTH else file_position(element) + length


def meta_cut(dataset, *, size: int, raw: bool) -> bool:
    """True when the file (``size`` bytes) ends inside its file meta information (group 0002), which starts
    after the preamble and marker (at 0 in a ``raw`` data set)."""
    meta = dataset.file_meta
    start = 0 if raw else PREAMBLE_BYTES + len(MARKER)
    if "FileMetaInformationGroupLength" in meta:
        if size < start + 12:                       # 12 bytes: the group length element itself
            return True
        if start + 12 + int(meta.FileMetaInformationGroupLength) > size:
            return True
    return any((defined_end(e) or 0) > size for e in placed_elements(meta))


def element_cut(elements: list, *, size: int) -> str | None:
    """Where a data element runs past the end of the file (``size`` bytes), or None when none does."""
    has_pixels = any(int(e.tag) in PIXEL_DATA_TAGS for e in elements)
    for element in elements:
        end = defined_end(element)
        if end is None or end <= size:
            continue
        if int(element.tag) in PIXEL_DATA_TAGS:
            present = max(size - file_position(element), 0)
            return f"inside its Pixel Data ({present} of its {element.length} bytes are there)"
        return "inside a data element after its Pixel Data" if has_pixels else \
            "inside a data element of its header, before any Pixel Data"
    return None


def stray_tail(path: Path, elements: list, *, size: int) -> str | None:
    """Where the file ends inside a data element's tag: a few bytes past the last whole element that pydicom
    skipped without a word (zero bytes there are padding, not a cut), or None."""
    end = defined_end(elements[-1]) if elements else None
    if end is None or not 0 < size - end < 12:
        return None
    with open(path, "rb") as file:
        file.seek(end)
        if not any(file.read()):
            return None
    return f"inside the tag of a data element ({size - end} bytes after the last whole element)"


def where_cut(path: Path, dataset, *, size: int, stopped_at: int, eof_warned: bool, raw: bool) -> str | None:
    """Where the file (``size`` bytes) ends before the data set it holds does, or None for a whole file.

    ``stopped_at`` is where pydicom stopped reading (past ``size`` when it
    skipped a value that the file does not hold); ``eof_warned`` says it met
    the file's end inside a value of undefined length (compressed pixels).
    """
    if meta_cut(dataset, size=size, raw=raw):
        return "inside its file meta information (the header group right after the DICM marker)"
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if syntax is not None and syntax.is_deflated:
        return None           # the elements' positions are in the inflated data, not in the file
    elements = placed_elements(dataset)
    where = element_cut(elements, size=size)
    if where is None and eof_warned:
        where = ("inside a value of undefined length (compressed Pixel Data, as a rule), before the delimiter "
                 "that closes it")
    if where is None and stopped_at > size:
        where = "inside its last data element"
    return where or stray_tail(path, elements, size=size)


def raw_problem(dataset) -> str | None:
    """Why a data set read with ``force=True`` from a file without the DICM marker is not DICOM, or None."""
    tags = [int(e.tag) for e in placed_elements(dataset)]
    if not tags:
        return "no data element found in it"
    if tags[0] >> 16 == 0 or any(a >= b for a, b in zip(tags, tags[1:])):
        return "its bytes do not read as data elements in ascending tag order"
    return None


def cut_message(path: Path, *, size: int, where: str) -> str:
    """The refusal of a file that ends before its data does."""
    return f"{path}: the DICOM file ends at byte {size}, {where}: {COPY_AGAIN}"


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[list]:
    """pydicom's warnings (recorded, in the list yielded) and log lines kept off the terminal: a warning may
    quote a header value, and a failing decoder logs its traceback; the errors they stand for are raised here,
    naming the file."""
    logger = logging.getLogger("pydicom")
    disabled, logger.disabled = logger.disabled, True
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            yield warned
    finally:
        logger.disabled = disabled


def watched_dcmread(path: Path, *, raw: bool) -> tuple:
    """pydicom's parse of ``path`` with the pixel data left on disk (``force`` for a ``raw`` data set).

    Returns the data set (None when pydicom failed), pydicom's error (or
    None), where it stopped reading, and whether it warned that the file ended
    inside a value.
    """
    import pydicom

    dataset = error = None
    with open(path, "rb") as file, quiet_pydicom() as warned:
        try:
            dataset = pydicom.dcmread(file, defer_size=DEFER_BYTES, force=raw)
        except Exception as failure:  # noqa: BLE001 - pydicom's own error on a malformed file, named by the caller
            error = failure
        stopped_at = file.tell()
    return dataset, error, stopped_at, any("End of file" in str(w.message) for w in warned)


def parsed_dataset(path: Path, *, raw: bool):
    """``path``'s data set with its pixel data left on disk, refused (naming the file) when it is cut short,
    cannot be parsed or, for a file without the DICM marker (``raw``), is not a DICOM data set."""
    size = path.stat().st_size
    if raw and size < PREAMBLE_BYTES + len(MARKER):
        raise NotDicom(path, f"it ends at byte {size}, before where the marker would be")
    dataset, error, stopped_at, eof_warned = watched_dcmread(path, raw=raw)
    where = "inside a data element" if error is not None and stopped_at >= size else None
    if error is None:
        try:
            where = where_cut(path, dataset, size=size, stopped_at=stopped_at, eof_warned=eof_warned, raw=raw)
        except MALFORMED_HEADER as failure:
            error = failure
    not_dicom = raw_problem(dataset) if raw and error is None and where is None else None
    if raw and (where or error or not_dicom):
        raise NotDicom(path, f"it ends at byte {size}, {where}" if where else
                       not_dicom or f"pydicom: {type(error).__name__}: {error}")
    if where:
        raise PipelineError(cut_message(path, size=size, where=where))
    if error is not None:
        raise PipelineError(f"{path}: not a readable DICOM file ({type(error).__name__}: {error}). "
                            "Replace or remove it.")
    return dataset


def check_has_pixels(header: PixelHeader, path: Path) -> None:
    """Refuse a file without Pixel Data: as cut short where its header describes an image (the file then ends
    just before its pixels), else saying what it is, by its SOP class where it gives one."""
    from pydicom.uid import UID

    if header.has_pixels:
        return
    if header.sop_class == MEDIA_STORAGE_DIRECTORY:
        raise PipelineError(f"{path}: a DICOMDIR, the index of a DICOM media export, lists images but holds "
                            "none. Name the folder it is in instead: the image files there are read.")
    if header.size is not None:
        size = path.stat().st_size
        raise PipelineError(cut_message(path, size=size, where=f"after a header that describes a {header.size[0]} x "
                                        f"{header.size[1]} px image but before its Pixel Data"))
    what = (f"its SOP class is {UID(header.sop_class).name}" if header.sop_class else
            "and no SOP class says what it is: a report or a header only")
    raise PipelineError(f"{path}: the DICOM file is whole but holds no image (no Pixel Data; {what}). "
                        "Give the image series instead.")


def check_photometric(photometric: str, path: Path) -> None:
    """Refuse a photometric interpretation that carries no gray scale read here."""
    if photometric not in MONOCHROME + AS_RGB + PARTIAL_LUMA:
        raise PipelineError(f"{path}: photometric interpretation {photometric} is not read here (palette colour "
                            "and others carry no gray scale); export the frames as MONOCHROME2 or RGB.")


def check_pixel_length(dataset, header: PixelHeader, path: Path) -> None:
    """Refuse uncompressed pixel data shorter than the frames the header declares (checked before any frame is
    read, as the decoder would only find it at the first missing frame)."""
    from pydicom.pixels.utils import get_expected_length
    from pydicom.uid import UID

    element = dataset.get_item("PixelData", keep_deferred=True)
    length = getattr(element, "length", UNDEFINED_LENGTH)
    if UID(header.transfer_syntax).is_encapsulated or length == UNDEFINED_LENGTH:
        return
    try:
        expected = get_expected_length(dataset, unit="bytes")
    except Exception:  # noqa: BLE001 - an attribute missing or malformed: the decoder names it at the first frame
        return
    if length < expected:
        raise PipelineError(f"{path}: its header declares {header.n_frames} frame(s) of {dataset.Columns} x "
                            f"{dataset.Rows} px ({expected} bytes of pixels), but its Pixel Data holds {length} "
                            "bytes: the header does not match the pixels. Export the file again, or remove it.")


def open_dicom(path: Path | str) -> PixelHeader:
    """The checked header of a DICOM file (Part 10, or a raw data set without the DICM marker) whose frames can
    then be read; every refusal is a :class:`PipelineError` naming the file and the fix (:class:`NotDicom` for a
    file that is no DICOM at all).  Warns when the pixels may show burned-in patient text."""
    path = Path(path)
    raw = not is_dicom(path)
    dataset = parsed_dataset(path, raw=raw)
    try:
        with quiet_pydicom():
            header = pixel_header(dataset, raw=raw)
    except MALFORMED_HEADER as error:
        raise PipelineError(f"{path}: not a readable DICOM file ({type(error).__name__}: {error}). "
                            "Replace or remove it.") from None
    if header.burned_in_annotation:
        log("dicom", f"warning: {path}: BurnedInAnnotation is YES: the pixels may show patient text, which "
                     "overlays made from them (explain) reproduce.")
    check_has_pixels(header, path)
    check_decodable(header.transfer_syntax, path)
    check_photometric(header.photometric, path)
    check_pixel_length(dataset, header, path)
    return header


def pixel_source(path: Path, header: PixelHeader):
    """What pydicom reads the frames from: the file, frame by frame; for a deflated data set (rare for images),
    the data set inflated whole, as a deflate stream has no frame boundaries to seek to."""
    import pydicom
    from pydicom.uid import UID

    if not UID(header.transfer_syntax).is_deflated:
        return path
    with quiet_pydicom():
        return pydicom.dcmread(path, force=header.raw)


def stored_frames(path: Path, header: PixelHeader) -> Iterator[np.ndarray]:
    """The stored frames as pydicom decodes them, read from the file one at a time; a decoder's error names the
    file and the frame."""
    from pydicom.pixels import iter_pixels

    options = {"transfer_syntax_uid": header.transfer_syntax} if header.raw else {}
    frames = iter_pixels(pixel_source(path, header), **options)
    try:
        for index in itertools.count(1):
            try:
                with quiet_pydicom():
                    frame = next(frames)
            except StopIteration:
                return
            except Exception as error:  # noqa: BLE001 - a decoder's own error, re-raised naming the file
                raise frame_error(path, header, index, error) from None
            yield frame
            del frame                   # hold no frame while the next is decoded
    finally:
        frames.close()


def frame_error(path: Path, header: PixelHeader, index: int, error: Exception) -> PipelineError:
    """The refusal of frame ``index`` that pydicom's decoder failed on, naming the file, the frame and the fix."""
    said = " ".join(str(error).split())         # one line: a plugin's report spans several
    return PipelineError(f"{path}: pydicom could not decode frame {index} of {header.n_frames} "
                         f"({type(error).__name__}: {said}). The file is damaged or its header does not "
                         "match its pixel data; export it again, or remove it.")


def coloured_dicom_frame(path: Path | str, index: int) -> tuple[np.ndarray, float]:
    """Frame ``index`` (1-based) of a DICOM file alone, as gray with its share of colour: what reads on past a
    frame the decoder failed on (:func:`stored_frames` stops there), without decoding the file from its start."""
    from pydicom.pixels import pixel_array

    path = Path(path)
    header = open_dicom(path)
    if not 1 <= index <= header.n_frames:
        raise PipelineError(f"{path}: frame {index} is asked for, but its header declares {header.n_frames}.")
    options = {"transfer_syntax_uid": header.transfer_syntax} if header.raw else {}
    try:
        with quiet_pydicom():
            frame = pixel_array(pixel_source(path, header), index=index - 1, **options)
    except Exception as error:  # noqa: BLE001 - a decoder's own error, re-raised naming the file
        raise frame_error(path, header, index, error) from None
    source = f"{path} frame {index}" if header.n_frames > 1 else path
    return to_gray(frame, header, source), colour_of(frame, header)


def to_gray(frame: np.ndarray, header: PixelHeader, source: Path | str) -> np.ndarray:
    """One decoded frame as 2-D uint8 gray, by the module's rules."""
    if header.photometric in PARTIAL_LUMA:
        luma = np.clip((frame[..., 0].astype(np.float64) - 16) * 255.0 / 219.0, 0, 255)
        return gray_frame(np.round(luma).astype(np.uint8), source, channel_order="RGB")
    bits = header.bits_stored or frame.dtype.itemsize * 8
    values = spread_to_uint8(frame, bits_stored=bits, signed=header.signed, invert=header.photometric == "MONOCHROME1")
    return gray_frame(values, source, channel_order="RGB" if header.colour else "gray")


def colour_of(frame: np.ndarray, header: PixelHeader) -> float:
    """The share of a stored frame's pixels in colour, as :func:`ultrasound_transfer.data.imaging.colour_share`
    counts it for an image file (0 for a monochrome frame).  A partial-range YBR frame (the only kind pydicom
    leaves unconverted) is converted to RGB first, by the ITU-R BT.601 studio-range equations."""
    if not header.colour or frame.ndim < 3:
        return 0.0
    if header.photometric in PARTIAL_LUMA:
        luma, blue, red = (frame[..., i].astype(np.float64) for i in range(3))
        scaled = (luma - 16) * 255.0 / 219.0
        blue, red = (blue - 128) * 255.0 / 224.0, (red - 128) * 255.0 / 224.0
        rgb = np.stack([scaled + 1.402 * red, scaled - 0.344136 * blue - 0.714136 * red, scaled + 1.772 * blue],
                       axis=-1)
        frame = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return colour_share(frame)


def coloured_gray_frames(path: Path, header: PixelHeader, *,
                         measure_colour: bool = True) -> Iterator[tuple[np.ndarray, float]]:
    """The frames of a file that :func:`open_dicom` passed, as gray with their share of colour (:func:`colour_of`;
    0 unmeasured where ``measure_colour`` is false), one at a time; refused at the end when fewer frames are
    stored than the header declares."""
    count = 0
    for count, frame in enumerate(stored_frames(path, header), start=1):
        yield (to_gray(frame, header, f"{path} frame {count}" if header.n_frames > 1 else path),
               colour_of(frame, header) if measure_colour else 0.0)
        del frame                       # hold no frame while the next is decoded
    if count < header.n_frames:
        raise PipelineError(f"{path}: its header declares {header.n_frames} frames, but only {count} are stored. "
                            "The file is damaged; export or copy it again.")


def iter_coloured_dicom_frames(path: Path | str, *,
                               measure_colour: bool = True) -> Iterator[tuple[np.ndarray, float]]:
    """Every frame of a DICOM file as 2-D uint8 gray with its share of colour, one at a time (see the module's
    rules).

    The header is checked at the call (a refusal is raised there, before any
    frame); a frame that cannot be decoded is refused when the iteration
    reaches it, after the frames before it were yielded.
    """
    path = Path(path)
    return coloured_gray_frames(path, open_dicom(path), measure_colour=measure_colour)


def iter_dicom_frames(path: Path | str) -> Iterator[np.ndarray]:
    """Every frame of a DICOM file as 2-D uint8 gray, one at a time (:func:`iter_coloured_dicom_frames` without
    the colour, which is then not measured)."""
    frames = iter_coloured_dicom_frames(path, measure_colour=False)
    return (gray for gray, _ in frames)


def read_dicom_frames(path: Path | str) -> list[np.ndarray]:
    """Every frame of a DICOM file as 2-D uint8 gray (see the module's rules), or a clear refusal."""
    return list(iter_dicom_frames(path))
