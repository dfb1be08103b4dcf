import struct
import zlib

import cv2
import numpy as np
import pytest

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.imaging import fit_square, letterbox, pixel_sha256, read_gray


@pytest.fixture
def gray():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(30, 50), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_lossless_formats_round_trip(tmp_path, gray, suffix):
    path = tmp_path / f"image{suffix}"
    cv2.imwrite(str(path), gray)
    assert np.array_equal(read_gray(path), gray)


def test_jpeg_decodes_close_to_original(tmp_path, gray):
    smooth = cv2.GaussianBlur(gray, (0, 0), 3)
    path = tmp_path / "image.jpg"
    cv2.imwrite(str(path), smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])
    decoded = read_gray(path)
    assert decoded.shape == smooth.shape
    assert np.abs(decoded.astype(int) - smooth).mean() < 3


def test_rgb_stored_gray_decodes_to_same_gray(tmp_path, gray):
    path = tmp_path / "rgb.png"
    cv2.imwrite(str(path), cv2.merge([gray, gray, gray]))
    assert np.array_equal(read_gray(path), gray)


def test_rgba_drops_alpha(tmp_path, gray):
    alpha = np.full_like(gray, 7)
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), cv2.merge([gray, gray, gray, alpha]))
    assert np.array_equal(read_gray(path), gray)


def test_16_bit_maps_linearly_to_8_bit(tmp_path):
    values = np.tile(np.array([[0, 257, 65535, 32896]], dtype=np.uint16), (16, 4))
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), values)
    assert read_gray(path)[0].tolist() == [0, 1, 255, 128] * 4


def test_undecodable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")
    with pytest.raises(PipelineError, match="broken.png"):
        read_gray(path)


def test_letterbox_keeps_aspect_ratio_and_centres():
    wide = np.full((20, 40), 200, dtype=np.uint8)
    out = letterbox(wide, 32)
    assert out.shape == (32, 32)
    rows = np.flatnonzero(out.max(axis=1) > 0)
    assert (rows.min(), rows.max()) == (8, 23)   # 16 rows of content, centred
    assert out[:, 0].max() == 200                # full width used
    tall = letterbox(wide.T, 32)
    assert np.array_equal(tall, out.T)


def test_letterbox_upscales_small_images():
    out = letterbox(np.full((4, 8), 100, dtype=np.uint8), 16)
    assert out.shape == (16, 16) and out[4:12].min() == 100 and out[:4].max() == 0


@pytest.mark.parametrize("shape", [(1, 50), (50, 1), (15, 200)])
def test_a_strip_or_thumbnail_is_refused_naming_the_file_and_its_size(tmp_path, shape):
    path = tmp_path / "strip.png"
    cv2.imwrite(str(path), np.full(shape, 100, dtype=np.uint8))
    with pytest.raises(PipelineError, match=rf"strip.png is {shape[1]} x {shape[0]} px, under 16 px on a side"):
        read_gray(path)


def test_a_file_declaring_over_a_billion_pixels_is_refused_before_decoding(tmp_path):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)      # 1.6e9 gray pixels
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    with pytest.raises(PipelineError, match=r"huge.png: it declares more pixels than OpenCV decodes"):
        read_gray(path)


def test_each_resize_mode_says_what_share_is_padding():
    wide = np.full((20, 40), 200, dtype=np.uint8)
    boxed, padding = fit_square(wide, 32, "letterbox")
    assert np.array_equal(boxed, letterbox(wide, 32)) and padding == pytest.approx(1 - (boxed > 0).mean())
    cropped, none = fit_square(wide, 32, "crop")
    assert none == 0 and cropped.min() == 200                     # the centre square, no padding
    marked = wide.copy()
    marked[:, :5] = 0                                             # the left edge is cut off by the crop...
    assert fit_square(marked, 32, "crop")[0].min() == 200
    stretched, none = fit_square(marked, 32, "stretch")           # ...and kept, widened, by the stretch
    assert none == 0 and stretched[:, :3].max() == 0 and stretched[:, 5:].min() == 200
    with pytest.raises(PipelineError, match="normalize.resize = 'pad' is not known"):
        fit_square(wide, 32, "pad")


def test_pixel_hash_depends_on_pixels_and_shape(gray):
    assert pixel_sha256(gray) == pixel_sha256(gray.copy())
    assert pixel_sha256(gray) != pixel_sha256(gray.reshape(50, 30))
    changed = gray.copy()
    changed[0, 0] ^= 1
    assert pixel_sha256(gray) != pixel_sha256(changed)
