"""Frame -> model input tensor, exactly as the pack's manifest says.

Crop the central square, or the largest central rectangle of the model's aspect ratio (or a fraction of
either), resize with area interpolation, optionally neutralise the
light's colour (``edge.vision.color``), normalise with the manifest's mean/std, and quantise with the
backend's input tensor parameters. For an integer input the normalise+quantise steps are one affine map per
channel, so they are folded into a 256-entry lookup table: one gather per pixel instead of four float
operations (and the colour correction, itself a per-channel table, is folded into that one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge.vision.color import apply_table, correction_table, require_rgb_uint8

if TYPE_CHECKING:  # types only: edge.inference imports this module, so a runtime import would be a cycle
    from edge.inference.base import TensorSpec
    from edge.inference.manifest import InputSpec


def crop_box(height: int, width: int, spec: InputSpec) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the region the model sees."""
    if spec.crop == "none":
        return 0, 0, height, width
    if spec.crop == "center":  # the largest rectangle of the input's aspect ratio that fits, then the fraction
        aspect = spec.width / spec.height
        fit_height = min(height, width / aspect)
        rows = max(1, min(height, round(fit_height * spec.crop_fraction)))
        cols = max(1, min(width, round(fit_height * aspect * spec.crop_fraction)))
    else:
        rows = cols = max(1, round(min(height, width) * spec.crop_fraction))
    top, left = (height - rows) // 2, (width - cols) // 2
    return top, left, top + rows, left + cols


def crop_resize(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The region the model sees, at the model's size: area interpolation to shrink, linear to enlarge.
    Training makes its val and calibration inputs with this too, so they are what the device feeds."""
    top, left, bottom, right = crop_box(image.shape[0], image.shape[1], spec)
    region = image[top:bottom, left:right]
    if region.shape[:2] == (spec.height, spec.width):
        return np.ascontiguousarray(region)
    shrinking = region.shape[0] > spec.height
    return cv2.resize(region, (spec.width, spec.height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


_CHANNELS = np.arange(3)


class Preprocessor:
    """Callable turning an RGB uint8 image into a (1, H, W, 3) tensor for one backend's input."""

    def __init__(self, spec: InputSpec, tensor: TensorSpec) -> None:
        self.spec = spec
        self.tensor = tensor
        height, width = tensor.height_width
        if (height, width) != (spec.height, spec.width):
            raise ValueError(
                f"manifest input {spec.width}x{spec.height} does not match the model's {width}x{height}"
            )
        if tensor.quantized and tensor.dtype.itemsize != 1:
            raise ValueError(f"unsupported quantised input type {tensor.dtype}: only 8-bit inputs are supported")
        self._lut = _quantization_lut(spec, tensor) if tensor.quantized else None
        self._mean = np.asarray(spec.mean, dtype=np.float32)
        self._inv_std = 1.0 / np.asarray(spec.std, dtype=np.float32)

    def crop_resize(self, image: np.ndarray) -> np.ndarray:
        return crop_resize(image, self.spec)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        require_rgb_uint8(image)
        return self.from_view(self.crop_resize(image))

    def from_view(self, resized: np.ndarray) -> np.ndarray:
        """The tensor for a view already cropped and resized to the model's size (``crop_resize``): what
        saliency scores, so an occluded view is not cropped a second time."""
        lut = self._lut
        if self.spec.color_constancy == "shades_of_gray":
            correction = correction_table(resized, self.spec.color_constancy_power)
            if lut is None:
                resized = apply_table(resized, correction)
            else:  # one pass: the quantisation table read through this image's correction
                lut = np.ascontiguousarray(lut.reshape(256, 3)[correction, _CHANNELS].reshape(256, 1, 3))
        if lut is not None:
            tensor = cv2.LUT(resized, lut).view(self.tensor.dtype)
        else:
            tensor = ((resized.astype(np.float32) - self._mean) * self._inv_std).astype(self.tensor.dtype)
        return tensor[np.newaxis]


def _quantization_lut(spec: InputSpec, tensor: TensorSpec) -> np.ndarray:
    """(256, 1, 3) uint8 table for ``cv2.LUT``: pixel value -> quantised input byte, per channel.

    Int8 values are stored as their bytes and the result is viewed as int8 (``cv2.LUT`` wants 8-bit tables).
    """
    info = np.iinfo(tensor.dtype)
    pixels = np.arange(256, dtype=np.float64)
    table = np.empty((3, 256), dtype=tensor.dtype)
    for channel in range(3):
        real = (pixels - spec.mean[channel]) / spec.std[channel]
        quantised = np.round(real / tensor.scale + tensor.zero_point)
        table[channel] = np.clip(quantised, info.min, info.max).astype(tensor.dtype)
    return np.ascontiguousarray(table.T.reshape(256, 1, 3)).view(np.uint8)
