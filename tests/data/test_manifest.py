"""decode_all's frames: each listed frame read once, past a damaged one, by the reader predict uses."""

from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.data.test_dicom import dicom_dataset, raw_data_set
from tests.miniatures import phantom_pixels
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.datasets import Scan
from ultrasound_transfer.data.manifest import decode_all


def rle_loop_with_a_bad_frame(path: Path, *, frames: int = 5, bad: int = 2) -> Path:
    """An RLE loop whose frame ``bad`` (1-based) has a damaged RLE header: only that frame fails to decode."""
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import RLELossless

    ds = dicom_dataset()
    ds.set_pixel_data(np.stack(phantom_pixels(frames)), "MONOCHROME2", 8)
    ds.compress(RLELossless)
    fragments = list(generate_frames(ds.PixelData, number_of_frames=frames))
    fragments[bad - 1] = b"\x63\0\0\0" + fragments[bad - 1][4:]          # 99 segments
    ds.PixelData = encapsulate(fragments)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_frames_past_a_damaged_one_are_read_and_only_it_is_left_out(tmp_path):
    path = rle_loop_with_a_bad_frame(tmp_path / "loop.dcm")
    scan = Scan()
    scan.add_file(tmp_path, path, "malignant", patient="P1")
    _, _, kept, excluded = decode_all(tmp_path, scan.rows, 64, "skip")
    assert [row["frame"] for row in kept] == [1, 3, 4, 5]
    assert excluded == [{"path": "loop.dcm#2", "reason": "undecodable or degenerate image"}]
    with pytest.raises(PipelineError, match=r"loop\.dcm: pydicom could not decode frame 2 of 5"):
        decode_all(tmp_path, scan.rows, 64, "error")


def test_a_listed_raw_data_set_without_suffix_gives_every_frame(tmp_path):
    loop = np.stack(phantom_pixels(4))
    path = raw_data_set(tmp_path / "LOOP1", loop, implicit=True)
    assert b"DICM" not in path.read_bytes()[:132] and pydicom.dcmread(path, force=True).NumberOfFrames == 4
    scan = Scan()
    scan.add_file(tmp_path, path, "malignant", patient="P1")
    stack, _, kept, _ = decode_all(tmp_path, scan.rows, 64, "error", "stretch")
    assert [row["frame"] for row in kept] == [1, 2, 3, 4] and len(stack) == 4
