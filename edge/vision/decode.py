"""Untrusted image bytes -> RGB array, or an ``ImageError`` a user can act on.

Limits are checked before any pixel is decoded: the file size first, then the dimensions from the
header, so a decompression bomb is refused without ever allocating its pixels. What is decoded is brought down
to ``MAX_DECODED_SIDE``, one decode at a time, so memory stays bounded whatever arrives; a JPEG whose data is
damaged is refused, not classified with its damaged part filled in grey.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.errors import ImageError
from edge.vision.quality import MAX_ASPECT

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
# Decoded images are brought down to this long side: the model sees 224 px and the quality gate 160, so more
# pixels only cost memory (a 40 MP photo is 120 MB as RGB, more in the intermediate copies).
MAX_DECODED_SIDE = 2048
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a phone's multi-picture JPEG; its first picture is the photo
# libjpeg warnings that leave every pixel intact: stray bytes between header segments or after the last scan,
# an odd ICC or JFIF header, and the scan parameters Samsung phones write ("Invalid SOS parameters for
# sequential JPEG"). Such a file is decoded by Pillow as before; any other warning means damaged image data.
HARMLESS_JPEG_WARNINGS = re.compile(
    r"extraneous bytes before marker 0x(?!d[0-7])|ICC|JFIF|Invalid SOS parameters for sequential JPEG", re.IGNORECASE)
MAX_JPEG_SCANS = 100  # a progressive photo has about ten; each repeated scan costs a full pass over the image
# What an upload may be: Pillow would otherwise also open, for instance, EPS through Ghostscript (no time limit).
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # JPEG opens MPO too
# Every decode runs on this one thread, one at a time: a decode may briefly hold a full-size frame (a 40 MP
# RGBA PNG is 160 MB). The kiosk's server threads decoding uploads at once took a small device to gigabytes,
# and even taking turns, each thread's malloc arena kept its own peak (four threads: 630 MB after the last
# decode had ended, against 250 MB for one thread).
# The worker lives as long as the process; the executor ends it at interpreter exit, between decodes.
DECODER_THREAD_PREFIX = "decode"
_DECODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix=DECODER_THREAD_PREFIX)
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that makes the picture upright (as Pillow's ImageOps.exif_transpose)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def read_image_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    path = Path(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{path}: is a folder, not an image")
        if not stat.S_ISREG(info.st_mode):  # a device or a pipe has no size to check, and may never end
            raise ImageError(f"{path}: not a regular file")
        if info.st_size > max_bytes:
            raise ImageError(f"{path}: file is {info.st_size / 1e6:.1f} MB, above the {max_bytes / 1e6:.1f} MB limit")
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)  # the file may have grown since stat()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {os.strerror(exc.errno) if exc.errno else exc}") from None
    try:
        return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None


def decode_image(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_side: int = MAX_DECODED_SIDE) -> np.ndarray:
    """Decode JPEG/PNG/BMP/WebP/… bytes to an RGB uint8 array, honouring EXIF orientation, with its long side
    brought down to ``max_side`` (area-averaged)."""
    if not data:
        raise ImageError("empty file")
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data) / 1e6:.1f} MB, above the {max_bytes / 1e6:.1f} MB limit")
    try:
        pending = _DECODER.submit(_decode, data, max_pixels, max_side)
    except RuntimeError:  # the interpreter is exiting: the executor takes no more work
        raise ImageError("the device is shutting down: send the photo again in a minute") from None
    return pending.result()


def _decode(data: bytes, max_pixels: int, max_side: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Our own pixel limit (checked from the header below) is stricter and says more than PIL's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"image is {width}x{height} ({width * height / 1e6:.0f} MP), above the "
                        f"{max_pixels / 1e6:.0f} MP limit"
                    )
                if width < 8 or height < 8:
                    raise ImageError(f"image is {width}x{height}: too small to assess")
                if max(width, height) / min(width, height) > MAX_ASPECT:  # before its pixels are decoded
                    raise ImageError(f"image is {width}x{height}: too elongated to be a photo of the skin")
                turn = _upright_transpose(image)
                if image.format in JPEG_FORMATS:
                    rgb = _decode_jpeg(data, width, height, max_side)
                else:
                    image.load()
                    rgb = _to_rgb(_reduced(image, max_side))
            if turn is not None:
                rgb = rgb.transpose(turn)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image, or a format this device cannot read") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image declares more than {max_pixels / 1e6:.0f} MP: refused") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"corrupt or truncated image ({exc})") from None
    return _fit(pixels, max_side)


def _decode_jpeg(data: bytes, width: int, height: int, max_side: int) -> Image.Image:
    """libjpeg-turbo through simplejpeg, strictly: Pillow decodes a JPEG whose data is damaged without a word
    (the damaged part comes out grey and the rest is classified as if it were the photo). A large JPEG is
    decoded at a reduced DCT scale, never smaller than ``max_side`` on its long side. A file with only a
    harmless warning (``HARMLESS_JPEG_WARNINGS``) is decoded by Pillow, at the same reduced scale."""
    import simplejpeg

    if data.count(b"\xff\xda") > MAX_JPEG_SCANS:  # 0xFF in the image data is always stuffed: these are scans
        raise ImageError(f"JPEG has more than {MAX_JPEG_SCANS} scans: refused")
    scale = min(1.0, max_side / max(width, height))
    size = (math.ceil(width * scale), math.ceil(height * scale))
    try:
        return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, min_width=size[0],
                                                      min_height=size[1]))
    except ValueError as exc:
        warning = str(exc)
    if not HARMLESS_JPEG_WARNINGS.search(warning):
        raise ImageError(f"corrupt or truncated image ({warning}): the photo is damaged, take or send it again")
    with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
        image.draft("RGB", size)
        return image.convert("RGB")


def _reduced(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` box-averaged by the largest whole factor that keeps its long side at least ``max_side``,
    before any conversion copies it: modes ``reduce`` cannot average (bilevel, palette, 16-bit) are first
    converted to one it can."""
    factor = max(image.size) // max_side
    if factor < 2:
        return image
    if image.mode in ("1", "LA"):
        image = image.convert("L")
    elif image.mode in ("P", "PA", "RGBA"):  # the alpha is dropped later anyway; RGBA's reduce copies it twice
        image = image.convert("RGB")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    return image.reduce(factor)


def _fit(pixels: np.ndarray, max_side: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    if max(height, width) <= max_side:
        return pixels
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _upright_transpose(image: Image.Image) -> Image.Transpose | None:
    """The transpose that turns ``image`` as its EXIF orientation says. Only the orientation tag is read:
    Pillow's ``exif_transpose`` also rewrites the whole EXIF block, and raises on tags phones store with odd
    types, which must not cost the patient their photo. Unreadable metadata means the picture is used as
    stored."""
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - any metadata parse error; the pixels are fine
        return None
    return _UPRIGHT.get(orientation) if isinstance(orientation, int) else None


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. Pillow's ``convert`` clips 16-bit and 32-bit grey (``I;16``, ``I``) at 255 instead of
    scaling, which turns a 16-bit PNG white (and the advice into "too bright"); they are scaled here, in
    integers (float copies of a large frame cost gigabytes)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        grey = np.asarray(image)
        if image.mode == "I" and (grey.max(initial=0) > 65535 or grey.min(initial=0) < 0):
            raise ImageError("32-bit images are not supported: save the photo as an 8- or 16-bit JPEG or PNG")
        eight = (grey.astype(np.uint32) + 128) // 257  # round(grey / 257), 0..65535 -> 0..255
        return Image.fromarray(eight.astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        raise ImageError("floating-point images are not supported: save the photo as a JPEG or PNG")
    return image.convert("RGB")
