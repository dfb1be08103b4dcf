"""Decoding ultrasound image files into one common form: square, gray, uint8 (letterboxed, cropped or stretched)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from ultrasound_transfer.choices import RESIZE_MODES
from ultrasound_transfer.common import PipelineError, check_choice

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")
# How every frame becomes 8-bit gray (gray_frame), as the prepared data's preprocessing record states it.
GRAY_CONVERSION = ("colour to gray by the ITU-R BT.601 weights; 16-bit values / 257; alpha dropped; "
                   "DICOM MONOCHROME1 inverted, stored bits spread over 0..255")
# Smaller frames hold no lesion to read (a thumbnail, an icon, a one-line strip) and cannot be fingerprinted.
MIN_SIDE = 16


# A pixel whose colour channels spread by at least this much is coloured (a yellow caliper, a green marker, a
# Doppler box): JPEG's chroma noise on a gray frame stays well under it.
COLOUR_SPREAD = 48


def colour_share(image: np.ndarray) -> float:
    """Share of a decoded frame's pixels that are coloured (:data:`COLOUR_SPREAD`); 0 for a gray frame."""
    if image.ndim != 3 or image.shape[2] < 3:
        return 0.0
    channels = image[..., :3]
    return float(np.mean(channels.max(axis=2).astype(np.int32) - channels.min(axis=2) >= COLOUR_SPREAD *
                         (257 if image.dtype == np.uint16 else 1)))


def read_gray(path: Path | str) -> np.ndarray:
    """Decode a PNG, BMP or JPEG file into a 2-D uint8 gray image (:func:`read_frame` without its colour)."""
    return read_frame(path)[0]


def read_frame(path: Path | str) -> tuple[np.ndarray, float]:
    """Decode a PNG, BMP or JPEG file into a 2-D uint8 gray image, and the share of its pixels in colour.

    8- and 16-bit files, gray, RGB and RGBA are accepted.  16-bit values are
    mapped linearly onto 0..255 (65535 -> 255); alpha is dropped, since
    ultrasound frames carry no meaningful transparency; colour is converted
    with the ITU-R BT.601 weights (OpenCV's ``COLOR_BGR2GRAY``).  A frame
    with a side under :data:`MIN_SIDE` px, or one declaring more pixels than
    OpenCV decodes (2**30), is refused naming the file.
    """
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as error:
        limit = "CV_IO_MAX_IMAGE_PIXELS" in str(error)
        raise PipelineError(
            f"cannot decode image file {path}: "
            + ("it declares more pixels than OpenCV decodes (2**30); no ultrasound frame is that large, so the "
               "file is damaged or not a frame. Replace or remove it." if limit else
               f"OpenCV refused it ({str(error).strip().splitlines()[-1]}). Replace or remove the file.")
        ) from None
    if image is None:
        raise PipelineError(
            f"cannot decode image file {path}; it is empty, truncated or not PNG/BMP/JPEG. "
            "Replace or remove the file."
        )
    return gray_frame(image, path, channel_order="BGR"), colour_share(image)


def gray_frame(image: np.ndarray, source: Path | str, *, channel_order: str) -> np.ndarray:
    """A decoded frame (8- or 16-bit; gray, colour or with alpha) as 2-D uint8 gray, checked for size.

    ``channel_order`` is how colour channels come: ``BGR`` from OpenCV,
    ``RGB`` from DICOM, ``gray`` for a frame of one channel (DICOM
    ``MONOCHROME``); any order but ``BGR`` reads three channels as RGB.
    16-bit values map linearly onto 0..255 (65535 -> 255); alpha is dropped;
    colour becomes gray by the ITU-R BT.601 weights.  A frame with a side
    under :data:`MIN_SIDE` px is refused naming ``source``.
    """
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise PipelineError(f"{source} has pixel type {image.dtype}; only 8- and 16-bit images are supported.")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if channel_order == "BGR" else cv2.COLOR_RGBA2GRAY)
    elif image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if channel_order == "BGR" else cv2.COLOR_RGB2GRAY)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise PipelineError(f"{source} has an unsupported shape {image.shape}.")
    if min(image.shape) < MIN_SIDE:
        raise PipelineError(f"{source} is {image.shape[1]} x {image.shape[0]} px, under {MIN_SIDE} px on a side: "
                            "a thumbnail or a strip, not an ultrasound frame. Replace or remove the file.")
    return np.ascontiguousarray(image)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Scale ``image`` so its longer side is ``size`` and pad it to a centred square.

    The aspect ratio is kept: lesion shape (taller-than-wide, for instance) is a
    diagnostic feature that stretching would falsify.  Padding is black, like
    the background outside an ultrasound sector.
    """
    height, width = image.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def kept_region(image: np.ndarray, mode: str) -> np.ndarray:
    """The part of the frame that ``mode`` keeps: the centred square for ``crop``, else all of it."""
    if mode != "crop":
        return image
    height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centred square of side ``min(height, width)``, scaled to ``size``: no padding, the sides cut off."""
    return _resized(kept_region(image, "crop"), size, size)


def stretch(image: np.ndarray, size: int) -> np.ndarray:
    """The whole frame scaled to ``size`` x ``size``: no padding, nothing cut off, shapes distorted."""
    return _resized(image, size, size)


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def fit_square(image: np.ndarray, size: int, mode: str = "letterbox") -> tuple[np.ndarray, float]:
    """``image`` as the network's ``size`` x ``size`` square by ``normalize.resize``, and the share that is padding.

    ``letterbox`` (the default) keeps the whole frame and its shape, at the cost
    of padding whose extent shows the native aspect ratio (a possible
    shortcut, which the shortcut audit measures); ``crop`` keeps the shape and
    hides the aspect ratio but may cut a lesion near the side; ``stretch``
    keeps everything but distorts shapes (taller-than-wide is a malignancy sign).
    """
    check_choice("normalize.resize", mode, RESIZE_MODES)
    if mode == "crop":
        return center_crop(image, size), 0.0
    if mode == "stretch":
        return stretch(image, size), 0.0
    height, width = image.shape
    scale = size / max(height, width)
    covered = max(1, round(height * scale)) * max(1, round(width * scale))
    return letterbox(image, size), 1.0 - covered / size**2


def pixel_sha256(image: np.ndarray) -> str:
    """SHA-256 of the decoded pixels and their shape (not of the file bytes).

    Two files that decode to the same picture (a PNG and a BMP of one frame,
    say) get the same hash.
    """
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()
