"""Files and folders to frames: what is read, what is refused at once, what becomes an error row."""

import shutil

import cv2
import numpy as np
import pytest

from tests.data.test_dicom import dicom_dataset, raw_data_set, rle_loop_with_a_bad_third_frame, write_dicom
from tests.memory import traced_peak
from tests.miniatures import phantom_pixels, write
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.imaging import fit_square
from ultrasound_transfer.deployment.scans import (
    Frame,
    ScanProblem,
    folder_scans,
    iter_scan_frames,
    network_squares,
    read_scans,
    scan_files,
)


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


def test_a_folder_finds_dicom_by_content_and_says_what_it_left_out(tmp_path, capsys):
    from pydicom.uid import MediaStorageDirectoryStorage

    a, b = phantom_pixels(2)
    export = tmp_path / "export"
    (export / "DICOM" / "ST000001").mkdir(parents=True)
    write_dicom(export / "DICOM" / "ST000001" / "IM000001", np.stack([a, b]), "MONOCHROME2")   # a PACS export
    raw_data_set(export / "DICOM" / "ST000001" / "IM000002.dcm", a, implicit=True)             # no preamble
    write_dicom(export / "DICOMDIR", a, "MONOCHROME2")                          # the index, by its name
    index = dicom_dataset()
    index.SOPClassUID = index.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    index.save_as(export / "INDEX", enforce_file_format=True)                    # the index, by its SOP class
    for name in ("README", "notes.txt", "scan.pdf", "Thumbs.db"):
        (export / name).write_bytes(b"\0" * 200 + name.encode())
    files = scan_files([export])
    assert [f.name for f in files] == ["IM000001", "IM000002.dcm"]
    logged = capsys.readouterr().out.strip().splitlines()
    assert logged == [f"[scans] {export}: left out 6 of its 8 files (4 neither an image (.png, .bmp, .jpg, .jpeg) "
                      "nor a DICOM file (checked by content); 2 a DICOMDIR index, which lists images but holds none), "
                      "e.g. DICOMDIR, INDEX, README"]
    frames, problems = read_scans(files)
    assert not problems and [(f.file.split("/")[-1], f.frame) for f in frames] == [
        ("IM000001", 1), ("IM000001", 2), ("IM000002.dcm", 1)]


class CountedReads:
    """A binary file that notes how many bytes each read asks for."""

    def __init__(self, path, asked: list):
        self.file, self.asked = open(path, "rb"), asked

    def read(self, size=-1):
        self.asked.append(size)
        return self.file.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_folder_reads_only_the_first_132_bytes_of_a_file_to_tell_dicom(tmp_path, monkeypatch):
    (tmp_path / "big").write_bytes(b"\1" * 10_000_000)
    asked: list = []
    monkeypatch.setattr("ultrasound_transfer.data.dicom.open", lambda path, mode: CountedReads(path, asked),
                        raising=False)
    found = folder_scans(tmp_path)
    assert not found.scans and found.not_scans == [tmp_path / "big"] and asked == [132]


def test_an_empty_folder_or_a_missing_path_stops_the_command_before_any_network(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no scans")
    (tmp_path / "empty" / "data.bin").write_bytes(b"\0" * 300)
    (tmp_path / "empty" / "sub").mkdir()
    (tmp_path / "empty" / "sub" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(PipelineError, match=r"empty holds 3 files, none an image \(\.png, \.bmp, \.jpg, \.jpeg\) "
                                            r"or a DICOM file \(checked by content\) \(1 a DICOMDIR index, which "
                                            r"lists images but holds none\): e\.g\. data\.bin, readme\.txt, "
                                            r"sub/DICOMDIR\. Name another folder, or the files themselves\."):
        scan_files([tmp_path / "empty"])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(PipelineError, match=r"nothing holds no files; name another folder"):
        scan_files([tmp_path / "nothing"])
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


def test_a_named_file_without_suffix_is_read_as_raw_dicom_or_as_an_image_or_refused_as_neither(tmp_path):
    a, b = phantom_pixels(2)
    raw_data_set(tmp_path / "RAW0001", a, implicit=False)
    write(tmp_path / "frame.png", b)
    shutil.copy(tmp_path / "frame.png", tmp_path / "FRAME")
    (tmp_path / "NOTES").write_text("the lesion is in the upper outer quadrant\n" * 10)
    frames, problems = read_scans([tmp_path / "RAW0001", tmp_path / "FRAME", tmp_path / "NOTES"])
    assert [(f.file.split("/")[-1], f.frame) for f in frames] == [("RAW0001", 1), ("FRAME", 1)]
    assert np.array_equal(frames[0].gray, a) and np.array_equal(frames[1].gray, b)
    (problem,) = problems
    assert problem.error.startswith(f"{tmp_path / 'NOTES'}: neither an image file (no PNG, BMP or JPEG that OpenCV "
                                    "decodes) nor a DICOM file (no 'DICM' marker at bytes 128..131, and not readable "
                                    "as a raw DICOM data set: ")
    assert problem.error.endswith("Replace or remove it.")


def test_a_file_that_fails_partway_gives_its_frames_then_a_problem_and_read_scans_drops_them(tmp_path):
    write(tmp_path / "a.png", phantom_pixels(1)[0])
    bad = rle_loop_with_a_bad_third_frame(tmp_path / "bad.dcm")
    items = list(iter_scan_frames([bad, tmp_path / "a.png"]))
    assert [type(i).__name__ for i in items] == ["Frame", "Frame", "ScanProblem", "Frame"]
    assert isinstance(items[2], ScanProblem) and "bad.dcm: pydicom could not decode frame 3 of 3" in items[2].error
    frames, problems = read_scans([bad, tmp_path / "a.png"])
    assert [f.file.split("/")[-1] for f in frames] == ["a.png"] and [p.file for p in problems] == [str(bad)]


def discard_all(files) -> None:
    for item in iter_scan_frames(files):
        assert isinstance(item, Frame)
        del item


def test_memory_stays_near_one_frame_however_many_files_are_read(tmp_path):
    frame = np.tile(np.arange(3000, dtype=np.uint16) % 251, (3000, 1)).astype(np.uint8)     # 9 MB, compresses well
    write(tmp_path / "scan0.png", frame)
    files = [tmp_path / "scan0.png"] + [shutil.copy(tmp_path / "scan0.png", tmp_path / f"scan{i}.png")
                                        for i in range(1, 6)]
    one = traced_peak(lambda: discard_all(files[:1]))
    six = traced_peak(lambda: discard_all(files))
    kept = traced_peak(lambda: read_scans(files))
    assert frame.nbytes <= one < 2.5 * frame.nbytes, one
    assert six < 1.2 * one, (six, one)                          # near one frame, not six
    assert kept > 6 * frame.nbytes                              # keeping them would show (the test can fail)


def test_squares_are_made_by_the_studys_own_fit_square(tmp_path):
    frame = cv2.resize(phantom_pixels(1)[0], (90, 50))
    write(tmp_path / "wide.png", frame)
    frames, _ = read_scans([tmp_path / "wide.png"])
    for resize in ("letterbox", "crop", "stretch"):
        squares = network_squares(frames, image_size=32, resize=resize)
        assert squares.dtype == np.float32 and np.array_equal(squares[0], fit_square(frame, 32, resize)[0])
