"""Untrusted image bytes -> RGB array, or an ``ImageError`` a user can act on.

Limits are checked before any pixel is decoded: the file size first, then the dimensions from the
header, so a decompression bomb is refused without ever allocating its pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge.errors import ImageError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000


def read_image_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ImageError(f"{path}: is a folder, not an image")
        if size > max_bytes:
            raise ImageError(f"{path}: file is {size / 1e6:.1f} MB, above the {max_bytes / 1e6:.1f} MB limit")
        data = path.read_bytes()
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
                rgb = ImageOps.exif_transpose(image).convert("RGB")
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image, or a format this device cannot read") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image declares more than {max_pixels / 1e6:.0f} MP: refused") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"corrupt or truncated image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8)
