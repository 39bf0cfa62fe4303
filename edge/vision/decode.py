"""Untrusted image bytes -> RGB array, or an ``ImageError`` a user can act on.

Limits are checked before any pixel is decoded: the file size first, then the dimensions from the
header, so a decompression bomb is refused without ever allocating its pixels.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.errors import ImageError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
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


def decode_image(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG/BMP/WebP/… bytes to an RGB uint8 array, honouring EXIF orientation."""
    if not data:
        raise ImageError("empty file")
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data) / 1e6:.1f} MB, above the {max_bytes / 1e6:.1f} MB limit")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit (checked from the header below) is stricter and says more than PIL's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"image is {width}x{height} ({width * height / 1e6:.0f} MP), above the "
                        f"{max_pixels / 1e6:.0f} MP limit"
                    )
                if width < 8 or height < 8:
                    raise ImageError(f"image is {width}x{height}: too small to assess")
                image.load()
                rgb = _to_rgb(_upright(image))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image, or a format this device cannot read") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image declares more than {max_pixels / 1e6:.0f} MP: refused") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"corrupt or truncated image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8)


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says. Only the orientation tag is read: Pillow's
    ``exif_transpose`` also rewrites the whole EXIF block, and raises on tags phones store with odd types,
    which must not cost the patient their photo. Unreadable metadata means the picture is used as stored."""
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - any metadata parse error; the pixels are already decoded and fine
        return image
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. Pillow's ``convert`` clips 16-bit and 32-bit grey (``I;16``, ``I``) at 255 instead of
    scaling, which turns a 16-bit PNG white (and the advice into "too bright"); they are scaled here."""
    if image.mode.startswith("I;16") or image.mode == "I":
        grey = np.asarray(image, dtype=np.float64)
        if image.mode == "I" and grey.max(initial=0) > 65535:
            raise ImageError("32-bit images are not supported: save the photo as an 8- or 16-bit JPEG or PNG")
        return Image.fromarray(np.round(grey.clip(0, 65535) / 257).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        raise ImageError("floating-point images are not supported: save the photo as a JPEG or PNG")
    return image.convert("RGB")
