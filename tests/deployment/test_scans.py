"""Files and folders to frames: what is read, what is refused at once, what becomes an error row."""

import cv2
import numpy as np
import pytest

from tests.data.test_dicom import write_dicom
from tests.miniatures import phantom_pixels, write
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.imaging import fit_square
from ultrasound_transfer.deployment.scans import network_squares, read_scans, scan_files


def test_folders_expand_to_their_scans_at_any_depth_and_named_files_are_read_whatever_their_suffix(tmp_path):
    a, b, c = phantom_pixels(3)
    write(tmp_path / "scans" / "a.png", a)
    write(tmp_path / "scans" / "deeper" / "b.jpg", b)
    write_dicom(tmp_path / "scans" / "deeper" / "c.dcm", c, "MONOCHROME2")
    (tmp_path / "scans" / "notes.txt").write_text("report")
    write_dicom(tmp_path / "IM000001", np.stack([a, b]), "MONOCHROME2")     # no suffix, as scanners write
    files = scan_files([tmp_path / "scans", tmp_path / "IM000001"])
    assert [f.name for f in files] == ["a.png", "b.jpg", "c.dcm", "IM000001"]
    frames, problems = read_scans(files)
    assert not problems and [(f.file.split("/")[-1], f.frame) for f in frames] == [
        ("a.png", 1), ("b.jpg", 1), ("c.dcm", 1), ("IM000001", 1), ("IM000001", 2)]


def test_an_empty_folder_or_a_missing_path_stops_the_command_before_any_network(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no scans")
    with pytest.raises(PipelineError, match=r"empty holds no image or DICOM file"):
        scan_files([tmp_path / "empty"])
    with pytest.raises(PipelineError, match=r"nowhere: no such file or folder"):
        scan_files([tmp_path / "nowhere"])
    with pytest.raises(PipelineError, match="no scans given"):
        scan_files([])


def test_a_bad_file_among_good_ones_becomes_a_problem_naming_it_and_the_rest_are_read(tmp_path):
    write(tmp_path / "good.png", phantom_pixels(1)[0])
    (tmp_path / "not-an-image.png").write_bytes(b"PK\x03\x04 zip, not a png")
    write(tmp_path / "icon.png", np.zeros((10, 40), np.uint8))
    frames, problems = read_scans(scan_files([tmp_path]))
    assert [f.file.split("/")[-1] for f in frames] == ["good.png"]
    by_file = {p.file.split("/")[-1]: p.error for p in problems}
    assert "not-an-image.png" in by_file["not-an-image.png"] and "Replace or remove" in by_file["not-an-image.png"]
    assert "40 x 10 px, under 16 px" in by_file["icon.png"]


def test_squares_are_made_by_the_studys_own_fit_square(tmp_path):
    frame = cv2.resize(phantom_pixels(1)[0], (90, 50))
    write(tmp_path / "wide.png", frame)
    frames, _ = read_scans([tmp_path / "wide.png"])
    for resize in ("letterbox", "crop", "stretch"):
        squares = network_squares(frames, image_size=32, resize=resize)
        assert squares.dtype == np.float32 and np.array_equal(squares[0], fit_square(frame, 32, resize)[0])
