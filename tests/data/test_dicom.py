"""DICOM frames read as the study's gray frames, from files the tests write with pydicom."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

from tests.memory import traced_peak
from tests.miniatures import phantom_pixels
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.dicom import (
    NotDicom,
    is_dicom,
    is_dicomdir,
    iter_dicom_frames,
    read_dicom_frames,
    spread_to_uint8,
)
from ultrasound_transfer.data.imaging import read_gray

PATIENT_NAME, PATIENT_ID = "Doe^Jane", "PID-4711"


def dicom_dataset(syntax=ExplicitVRLittleEndian) -> Dataset:
    """A secondary-capture dataset with a patient's identifiers (which must never be read out)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT_NAME, PATIENT_ID, "US"
    return ds


def write_dicom(path: Path, pixels: np.ndarray, photometric: str, *, bits_stored: int | None = None) -> Path:
    """``pixels`` (frames first when 3-D gray or 4-D colour) written as an uncompressed DICOM file."""
    ds = dicom_dataset()
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def frame():
    return phantom_pixels(1)[0]


def test_monochrome2_8_bit_reads_as_the_same_png_does(tmp_path, frame):
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    path = write_dicom(tmp_path / "frame", frame, "MONOCHROME2")     # scanners often write no suffix
    assert is_dicom(path) and not is_dicom(tmp_path / "frame.png")
    (gray,) = read_dicom_frames(path)
    assert np.array_equal(gray, read_gray(tmp_path / "frame.png"))


def test_monochrome1_is_inverted_and_12_bit_values_spread_onto_0_255(tmp_path, frame):
    twelve_bit = (frame.astype(np.int64) * 4095 // 255).astype(np.uint16)
    (gray,) = read_dicom_frames(write_dicom(tmp_path / "m1.dcm", 4095 - twelve_bit, "MONOCHROME1", bits_stored=12))
    assert np.abs(gray.astype(int) - frame.astype(int)).max() <= 1
    assert spread_to_uint8(np.array([-2048, 2047]), bits_stored=12, signed=True, invert=False).tolist() == [0, 255]


def test_rgb_and_ybr_full_turn_gray_as_a_colour_png_does(tmp_path, frame):
    colour = np.stack([frame, np.roll(frame, 3, axis=1), 255 - frame], axis=-1)    # R, G, B differ
    cv2.imwrite(str(tmp_path / "colour.png"), colour[..., ::-1])                  # OpenCV writes BGR
    expected = read_gray(tmp_path / "colour.png")
    (rgb,) = read_dicom_frames(write_dicom(tmp_path / "rgb.dcm", colour, "RGB"))
    assert np.array_equal(rgb, expected)
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(colour, "RGB", "YBR_FULL")
    (from_ybr,) = read_dicom_frames(write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL"))
    assert np.abs(from_ybr.astype(int) - expected.astype(int)).max() <= 2      # YCbCr round trip in 8 bits


def test_a_cine_loop_gives_one_frame_per_stored_frame(tmp_path):
    loop = np.stack(phantom_pixels(3))
    frames = read_dicom_frames(write_dicom(tmp_path / "loop.dcm", loop, "MONOCHROME2"))
    assert len(frames) == 3 and all(np.array_equal(a, b) for a, b in zip(frames, loop))


def test_compressed_pixels_without_a_decoder_are_refused_naming_the_package(tmp_path, frame):
    ok, jpeg = cv2.imencode(".jpg", frame)
    ds = dicom_dataset(JPEGBaseline8Bit)
    ds.Rows, ds.Columns = frame.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = encapsulate([jpeg.tobytes()])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpeg.dcm", enforce_file_format=True)
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("a JPEG plugin for pydicom is installed here")
    with pytest.raises(PipelineError, match=r"jpeg\.dcm.*JPEG Baseline.*pylibjpeg") as refused:
        read_dicom_frames(tmp_path / "jpeg.dcm")
    assert PATIENT_NAME not in str(refused.value) and PATIENT_ID not in str(refused.value)


def test_a_header_without_pixels_a_damaged_file_and_a_tiny_frame_are_refused_by_name(tmp_path):
    ds = dicom_dataset()
    ds.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    with pytest.raises(PipelineError, match=r"report\.dcm.*holds no image"):
        read_dicom_frames(tmp_path / "report.dcm")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    with pytest.raises(PipelineError, match=r"broken\.dcm"):
        read_dicom_frames(tmp_path / "broken.dcm")
    with pytest.raises(PipelineError, match=r"tiny\.dcm is 8 x 8 px"):
        read_dicom_frames(write_dicom(tmp_path / "tiny.dcm", np.zeros((8, 8), np.uint8), "MONOCHROME2"))


def test_a_header_without_its_file_meta_is_refused_by_name_not_with_a_traceback(tmp_path):
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    ds.set_pixel_data(np.zeros((64, 64), np.uint8), "MONOCHROME2", 8)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    (tmp_path / "no_meta.dcm").write_bytes(b"\0" * 128 + b"DICM" + body.getvalue())   # no transfer syntax
    with pytest.raises(PipelineError, match=r"no_meta\.dcm: not a readable DICOM file"):
        read_dicom_frames(tmp_path / "no_meta.dcm")


def test_burned_in_annotation_is_read_with_a_warning_that_names_the_file(tmp_path, frame, capsys):
    ds = dicom_dataset()
    ds.set_pixel_data(frame, "MONOCHROME2", 8)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(tmp_path / "burned.dcm", enforce_file_format=True)
    (gray,) = read_dicom_frames(tmp_path / "burned.dcm")
    assert np.array_equal(gray, frame)
    shown = capsys.readouterr().out
    assert "burned.dcm: BurnedInAnnotation is YES" in shown
    assert PATIENT_NAME not in shown and PATIENT_ID not in shown
    read_dicom_frames(write_dicom(tmp_path / "clean.dcm", frame, "MONOCHROME2"))
    assert "BurnedInAnnotation" not in capsys.readouterr().out


def test_a_frame_count_that_is_not_a_number_is_refused_by_name(tmp_path, frame):
    ds = dicom_dataset()
    ds.set_pixel_data(frame, "MONOCHROME2", 8)
    ds.NumberOfFrames = 12
    ds.save_as(tmp_path / "frames.dcm", enforce_file_format=True)
    element = bytes([0x28, 0, 0x08, 0, ord("I"), ord("S"), 2, 0]) + b"12"     # (0028,0008) IS, explicit VR
    written = (tmp_path / "frames.dcm").read_bytes()
    assert written.count(element) == 1
    (tmp_path / "frames.dcm").write_bytes(written.replace(element, element[:-2] + b"1x"))   # parsed on access
    with pytest.raises(PipelineError, match=r"frames\.dcm: not a readable DICOM file"):
        read_dicom_frames(tmp_path / "frames.dcm")


def raw_data_set(path: Path, pixels: np.ndarray, *, implicit: bool) -> Path:
    """``pixels`` written as a raw DICOM data set: no preamble, no DICM marker, no file meta (as old systems do)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = dicom_dataset()
    del ds.file_meta
    ds.set_pixel_data(pixels, "MONOCHROME2", 8)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, implicit
    write_dataset(body, ds)
    path.write_bytes(body.getvalue())
    return path


@pytest.mark.parametrize("implicit", [True, False])
def test_a_raw_data_set_without_preamble_reads_as_the_part_10_file_does(tmp_path, implicit):
    loop = np.stack(phantom_pixels(2))
    raw = raw_data_set(tmp_path / "raw.dcm", loop, implicit=implicit)
    assert not is_dicom(raw)
    frames = read_dicom_frames(raw)
    assert len(frames) == 2 and all(np.array_equal(a, b) for a, b in zip(frames, loop))


def test_a_dcm_file_that_is_no_dicom_at_all_is_refused_naming_what_was_tried(tmp_path, frame):
    (tmp_path / "notes.dcm").write_text("scanned on Tuesday; the lesion is in the upper outer quadrant\n" * 5)
    cv2.imwrite(str(tmp_path / "image.png"), frame)
    (tmp_path / "image.dcm").write_bytes((tmp_path / "image.png").read_bytes())
    (tmp_path / "zeros.dcm").write_bytes(bytes(600))
    for name in ("notes.dcm", "image.dcm", "zeros.dcm"):
        with pytest.raises(NotDicom, match=rf"{name}: no DICOM preamble and 'DICM' marker .* could not be read as "
                                           r"a raw DICOM data set either \(.+\)\. .*copy or export it again") as no:
            read_dicom_frames(tmp_path / name)
        assert "not PNG/BMP/JPEG" not in str(no.value)


def cut_points(data: bytes) -> dict[str, int]:
    """Where to cut a written file: in the preamble, the file meta group, a header element, at and in the Pixel Data."""
    pixels = data.index(b"\xe0\x7f\x10\x00")             # (7FE0,0010) Pixel Data, little endian
    return {"preamble": 60, "meta": 160, "header element": data.index(PATIENT_NAME.encode()) + 3,
            "before the pixel data": pixels, "pixel tag": pixels + 5, "pixel length": pixels + 10,
            "pixel data": pixels + 12 + 5000, "last byte": len(data) - 1}


WHERE = {"meta": r"inside its file meta information \(the header group right after the DICM marker\)",
         "header element": r"inside a data element of its header, before any Pixel Data",
         "before the pixel data": r"after a header that describes a 64 x 48 px image but before its Pixel Data",
         "pixel tag": r"inside the tag of a data element \(5 bytes after the last whole element\)",
         "pixel length": r"inside a data element",
         "pixel data": r"inside its Pixel Data \(5000 of its 9216 bytes are there\)",       # 3 frames, 64 x 48
         "last byte": r"inside its Pixel Data \(9215 of its 9216 bytes are there\)"}


@pytest.mark.parametrize("where", list(WHERE) + ["preamble"])
def test_a_file_cut_short_is_refused_naming_where_it_ends_and_the_fix(tmp_path, where):
    data = write_dicom(tmp_path / "whole.dcm", np.stack(phantom_pixels(3)), "MONOCHROME2").read_bytes()
    cut = cut_points(data)[where]
    (tmp_path / "cut.dcm").write_bytes(data[:cut])
    with pytest.raises(PipelineError) as refused:
        read_dicom_frames(tmp_path / "cut.dcm")
    message = str(refused.value)
    if where == "preamble":                                # no DICM marker left: tried as a raw data set
        assert re.search(rf"cut\.dcm: no DICOM preamble .*it ends at byte {cut}, .*damaged or cut short", message)
    else:
        assert re.search(rf"cut\.dcm: the DICOM file ends at byte {cut}, {WHERE[where]}: it was probably cut short "
                         r"in copying\. Copy it again", message), message
    assert PATIENT_NAME[:3] not in message and PATIENT_ID not in message and "Traceback" not in message


def test_compressed_pixel_data_cut_short_is_refused_as_cut(tmp_path, frame):
    from pydicom.uid import RLELossless

    ds = dicom_dataset()
    ds.set_pixel_data(np.stack(phantom_pixels(3)), "MONOCHROME2", 8)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    data = (tmp_path / "rle.dcm").read_bytes()
    assert len(read_dicom_frames(tmp_path / "rle.dcm")) == 3
    for cut, where in ((data.index(b"\xe0\x7f\x10\x00") + 200, "inside a value of undefined length"),
                       (len(data) - 4, "inside its last data element")):
        (tmp_path / "cut.dcm").write_bytes(data[:cut])
        with pytest.raises(PipelineError, match=rf"cut\.dcm: the DICOM file ends at byte {cut}, {where}.*cut short"):
            read_dicom_frames(tmp_path / "cut.dcm")


def test_a_whole_file_without_pixels_is_named_by_its_sop_class_and_a_dicomdir_as_an_index(tmp_path):
    from pydicom.uid import BasicTextSRStorage, MediaStorageDirectoryStorage

    ds = dicom_dataset()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(PipelineError, match=r"sr\.dcm: the DICOM file is whole but holds no image \(no Pixel Data; "
                                            r"its SOP class is Basic Text SR Storage\)\. Give the image series"):
        read_dicom_frames(tmp_path / "sr.dcm")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.save_as(tmp_path / "INDEX", enforce_file_format=True)
    assert is_dicomdir(tmp_path / "INDEX") and not is_dicomdir(tmp_path / "sr.dcm")
    with pytest.raises(PipelineError, match=r"INDEX: a DICOMDIR, the index of a DICOM media export, lists images"):
        read_dicom_frames(tmp_path / "INDEX")


def test_pixel_data_shorter_than_the_header_declares_is_refused_before_any_frame(tmp_path):
    write_dicom(tmp_path / "loop.dcm", np.stack(phantom_pixels(3)), "MONOCHROME2")
    import pydicom

    ds = pydicom.dcmread(tmp_path / "loop.dcm")
    ds.NumberOfFrames = 5
    ds.save_as(tmp_path / "loop.dcm")
    with pytest.raises(PipelineError, match=r"loop\.dcm: its header declares 5 frame\(s\) of 64 x 48 px \(15360 "
                                            r"bytes of pixels\), but its Pixel Data holds 9216 bytes"):
        iter_dicom_frames(tmp_path / "loop.dcm")             # refused at the call, before any frame


def rle_loop_with_a_bad_third_frame(path: Path) -> Path:
    """A three-frame RLE loop whose third frame's RLE header is damaged (found only when that frame is decoded)."""
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import RLELossless

    ds = dicom_dataset()
    ds.set_pixel_data(np.stack(phantom_pixels(3)), "MONOCHROME2", 8)
    ds.compress(RLELossless)
    fragments = list(generate_frames(ds.PixelData, number_of_frames=3))
    fragments[2] = b"\x63\0\0\0" + fragments[2][4:]          # 99 segments
    ds.PixelData = encapsulate(fragments)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_frame_the_decoder_fails_on_is_refused_after_the_frames_before_it(tmp_path):
    frames = iter_dicom_frames(rle_loop_with_a_bad_third_frame(tmp_path / "bad.dcm"))
    loop = phantom_pixels(3)
    assert np.array_equal(next(frames), loop[0]) and np.array_equal(next(frames), loop[1])
    with pytest.raises(PipelineError, match=r"bad\.dcm: pydicom could not decode frame 3 of 3 .*invalid number of "
                                            r"segments.*export it again"):
        next(frames)


def test_a_colour_cine_loop_turns_gray_frame_by_frame_as_colour_pngs_do(tmp_path):
    loop = np.stack([np.stack([f, np.roll(f, 5, axis=0), 255 - f], axis=-1) for f in phantom_pixels(3)])
    expected = []
    for i, colour in enumerate(loop):
        cv2.imwrite(str(tmp_path / f"{i}.png"), colour[..., ::-1])
        expected.append(read_gray(tmp_path / f"{i}.png"))
    frames = read_dicom_frames(write_dicom(tmp_path / "colour.dcm", loop, "RGB"))
    assert len(frames) == 3 and all(np.array_equal(a, b) for a, b in zip(frames, expected))


def test_a_long_cine_loop_is_read_one_frame_at_a_time(tmp_path):
    frame = np.tile(phantom_pixels(1)[0], (4, 4))                  # 256 x 256
    write_dicom(tmp_path / "one.dcm", frame, "MONOCHROME2")
    write_dicom(tmp_path / "loop.dcm", np.repeat(frame[None], 120, axis=0), "MONOCHROME2", bits_stored=8)
    one = traced_peak(lambda: [None for _ in iter_dicom_frames(tmp_path / "one.dcm")])
    loop = traced_peak(lambda: [None for _ in iter_dicom_frames(tmp_path / "loop.dcm")])
    whole = traced_peak(lambda: read_dicom_frames(tmp_path / "loop.dcm"))
    assert loop < 1.5 * one, (loop, one)                       # as one frame, not 120
    assert whole > 120 * frame.nbytes > 1.5 * one               # keeping them all would show (the test can fail)


def test_a_deflated_data_set_is_read_as_the_uncompressed_one(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    loop = np.stack(phantom_pixels(2))
    ds = dicom_dataset(DeflatedExplicitVRLittleEndian)
    ds.set_pixel_data(loop, "MONOCHROME2", 8)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian       # set_pixel_data chose an uncompressed one
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    frames = read_dicom_frames(tmp_path / "deflated.dcm")
    assert len(frames) == 2 and all(np.array_equal(a, b) for a, b in zip(frames, loop))
