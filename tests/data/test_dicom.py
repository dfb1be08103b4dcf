"""DICOM frames read as the study's gray frames, from files the tests write with pydicom."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

from tests.miniatures import phantom_pixels
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.dicom import is_dicom, read_dicom_frames, spread_to_uint8
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
