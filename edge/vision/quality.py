"""The capture quality gate: is this frame good enough to classify?

``assess`` runs on every preview frame, in front of every model invoke, so it must be cheap (about 0.3 ms for
a 640x480 frame, measured in ``benchmarks/quality_calibration.md``): the frame is area-averaged so its long side
is ``analysis_size`` (160) pixels, converted once to YCrCb, and measured there with OpenCV calls on 8-bit masks
and small float32 images:

* exposure -- mean luma, the fraction of crushed-black pixels (luma) and of clipped pixels (any channel), all
  inside the field of view: a black border around it (a dermatoscope's round vignette) is left out;
* skin -- the fraction of colour-measurable pixels whose chroma (Cr, Cb) falls in the skin/lesion band;
* sharpness -- how much fine detail the sharpest parts of the frame hold (see ``_sharpness``), in all
  directions and, for motion blur, along the rows and along the columns separately
  (``_directional_sharpness``).

Issues are reported by root cause, in the order a user should fix them: light first (colour and sharpness
cannot be judged in a frame that is too dark or too bright), then framing (the sharpness of a scene that is
not skin says nothing about the skin), then focus. So a frame carries exposure issues, or NOT_SKIN, or BLUR.

Every threshold lives in ``QualitySettings``. The defaults were calibrated on HAM10000 dermoscopic images by
``benchmarks/calibrate_quality.py`` (results in ``benchmarks/quality_calibration.md``); they must be re-checked
on the device's own camera, whose colour and noise differ from a dermatoscope's.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.errors import ImageError
from edge.types import Quality, QualityIssue

__all__ = ["InvalidImage", "QualitySettings", "assess", "measure"]

# Smallest frame side we accept, and the most elongated frame: below/above these a frame is not a camera image.
MIN_SIDE = 16
MAX_ASPECT = 8.0
# Black regions touching the frame's edge are outside the field of view (a dermatoscope's round vignette, a
# lens hood) and are left out of the exposure measures, but only when they surround what is left (they
# touch all four edges of the frame) and what is left is roughly centred (its centroid within
# FIELD_OF_VIEW_OFF_CENTRE of the frame's size from the centre, on both axes; a clip-on adapter is rarely
# aligned exactly) and at least MIN_FIELD_OF_VIEW of the frame. Black over one side (a half-covered lens, a
# shadow, a dark background) surrounds nothing: that frame is judged as a whole.
MIN_FIELD_OF_VIEW = 0.2
FIELD_OF_VIEW_OFF_CENTRE = 0.15

# Sharpness is measured per tile on a TILES x TILES grid; tiles whose coarse structure carries less energy than
# FLAT_TILE_ENERGY (grey levels squared, for a frame of mean luma 128; scaled with the square of the frame's
# mean luma so that darker skin and brighter skin measure alike) are treated as flat, so that sensor noise on
# flat skin does not read as detail.
_TILES = 6
# Band sigmas (fine low edge, fine/coarse split, coarse high edge) in pixels of a frame with a 256 px long side;
# they are scaled with ``analysis_size`` so the bands keep covering the same image frequencies.
_BAND_SIGMAS = (1.0, 2.0, 8.0)
_BAND_REFERENCE_SIZE = 256
_FLAT_TILE_ENERGY = 2.0
_FLAT_TILE_REFERENCE_LUMA = 128.0
_SHARPEST_TILES_PERCENTILE = 90.0
# The directional measure decides only for frames whose all-direction sharpness is below this many times
# blur_min: parallel hair a few degrees off an axis lowers the ratio along that axis in a frame that is
# plainly sharp (a review: 28 of 100 such frames at 6 degrees were called BLUR), while motion blur already
# pulls the all-direction measure down.
_DIRECTIONAL_BELOW = 4.0


class InvalidImage(ImageError, ValueError):
    """The array handed to the quality gate is not an RGB uint8 frame it can measure."""


class QualitySettings(BaseModel):
    """Thresholds of the capture quality gate (defaults calibrated on HAM10000; re-check on the device)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the gate; when false every frame is accepted.")
    analysis_size: int = Field(
        160,
        ge=64,
        le=1024,
        description="Frames are resized so their long side is this many pixels before measuring, so a 640x480 "
        "camera frame and a 200x150 image are measured alike. The sharpness bands scale with it, but blur_min "
        "and the other thresholds are calibrated at 160: re-calibrate if it is changed. 160 is a quarter of a "
        "640x480 frame, which the gate reaches by two cheap 2x area halvings.",
    )
    blur_min: float = Field(
        0.042,
        ge=0.0,
        le=10.0,
        description="Minimum sharpness (fine-detail energy relative to coarse structure in the sharpest tiles "
        "of the frame); below it the frame is reported as BLUR.",
    )
    blur_directional_min: float = Field(
        0.028,
        ge=0.0,
        le=10.0,
        description="Minimum of the same measure taken along the rows and along the columns separately (the "
        "smaller of the two); below it a frame not plainly sharp (all-direction measure under 4 x blur_min) "
        "is BLUR. Motion blur smears one direction only and kept the all-direction measure up.",
    )
    luma_mean_min: float = Field(
        31.0,
        ge=0.0,
        le=255.0,
        description="Mean luma (0-255) of the field of view below which the frame is UNDEREXPOSED. It must stay "
        "below the darkest skin's own luma (Monk 10 is 37): 42 refused every photo of the darkest skin.",
    )
    luma_mean_max: float = Field(
        237.0, ge=0.0, le=255.0, description="Mean luma (0-255) above which the frame is OVEREXPOSED."
    )
    dark_level: int = Field(
        20, ge=0, le=254, description="Luma at or below which a pixel counts as crushed black."
    )
    dark_fraction_max: float = Field(
        0.5, ge=0.0, le=1.0, description="Fraction of crushed-black pixels above which the frame is UNDEREXPOSED."
    )
    bright_level: int = Field(
        250,
        ge=1,
        le=255,
        description="A pixel with any colour channel at or above this counts as clipped (skin clips in red "
        "first, long before its luma reaches white).",
    )
    bright_fraction_max: float = Field(
        0.40, ge=0.0, le=1.0, description="Fraction of clipped pixels above which the frame is OVEREXPOSED."
    )
    skin_luma_min: int = Field(
        25,
        ge=0,
        le=254,
        description="Pixels darker than this have unreliable colour and are left out of the skin fraction "
        "(dermatoscope vignette, black lesion centres).",
    )
    skin_luma_max: int = Field(
        249, ge=1, le=255, description="Pixels brighter than this (clipped glare) are left out of the skin fraction."
    )
    skin_cr_min: int = Field(129, ge=0, le=255, description="Lowest Cr of a skin or lesion pixel.")
    skin_cr_max: int = Field(188, ge=0, le=255, description="Highest Cr of a skin or lesion pixel.")
    skin_cb_min: int = Field(101, ge=0, le=255, description="Lowest Cb of a skin or lesion pixel.")
    skin_cb_max: int = Field(143, ge=0, le=255, description="Highest Cb of a skin or lesion pixel.")
    skin_crcb_sum_min: int = Field(
        255,
        ge=0,
        le=510,
        description="Lowest Cr+Cb of a skin pixel: neutral grey is 256, yellow/green/orange lie below, pink and "
        "red skin above. Lowering it admits warmer (more yellow) skin renderings but also tan fur and wood.",
    )
    skin_min_fraction: float = Field(
        0.74,
        ge=0.0,
        le=1.0,
        description="Minimum fraction of colour-measurable pixels that are skin or lesion coloured; below it "
        "the frame is reported as NOT_SKIN.",
    )

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> QualitySettings:
        for low, high in (
            ("luma_mean_min", "luma_mean_max"),
            ("dark_level", "bright_level"),
            ("skin_luma_min", "skin_luma_max"),
            ("skin_cr_min", "skin_cr_max"),
            ("skin_cb_min", "skin_cb_max"),
        ):
            if getattr(self, low) >= getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) must be below {high} ({getattr(self, high)})")
        return self


def assess(image: np.ndarray, settings: QualitySettings) -> Quality:
    """Judge one RGB uint8 HxWx3 frame; raise ``InvalidImage`` for anything else."""
    _check_frame(image)
    if not settings.enabled:
        return Quality()
    metrics = measure(image, settings)
    return Quality(issues=_issues(metrics, settings), metrics=metrics)


def measure(image: np.ndarray, settings: QualitySettings) -> dict[str, float]:
    """The gate's measurements on one frame, before any threshold is applied."""
    _check_frame(image)
    small = _resize_long_side(image, settings.analysis_size)
    ycrcb = cv2.cvtColor(small, cv2.COLOR_RGB2YCrCb)
    luma, cr, cb = cv2.split(ycrcb)
    crushed_mask = cv2.inRange(luma, 0, settings.dark_level)
    view = _field_of_view(crushed_mask)
    pixels = cv2.countNonZero(view)
    luma_mean = float(cv2.mean(luma, mask=view)[0])
    crushed = cv2.countNonZero(cv2.bitwise_and(crushed_mask, view))
    clipped = cv2.bitwise_not(cv2.inRange(small, (0, 0, 0), (settings.bright_level - 1,) * 3))
    grey = luma.astype(np.float32)  # both sharpness measures work on it
    return {
        "luma_mean": luma_mean,
        "dark_fraction": crushed / pixels,
        "bright_fraction": cv2.countNonZero(cv2.bitwise_and(clipped, view)) / pixels,
        "field_of_view": pixels / luma.size,
        "skin_fraction": _skin_fraction(ycrcb, luma, cr, cb, settings),
        "sharpness": _sharpness(grey, luma_mean, settings.analysis_size),
        "sharpness_directional": _directional_sharpness(grey, luma_mean, settings.analysis_size),
    }


def _issues(metrics: dict[str, float], settings: QualitySettings) -> tuple[QualityIssue, ...]:
    exposure = []
    if metrics["luma_mean"] < settings.luma_mean_min or metrics["dark_fraction"] > settings.dark_fraction_max:
        exposure.append(QualityIssue.UNDEREXPOSED)
    if metrics["luma_mean"] > settings.luma_mean_max or metrics["bright_fraction"] > settings.bright_fraction_max:
        exposure.append(QualityIssue.OVEREXPOSED)
    if exposure:
        return tuple(exposure)
    if metrics["skin_fraction"] < settings.skin_min_fraction:
        return (QualityIssue.NOT_SKIN,)
    smeared = (metrics["sharpness"] < _DIRECTIONAL_BELOW * settings.blur_min
               and metrics["sharpness_directional"] < settings.blur_directional_min)
    if metrics["sharpness"] < settings.blur_min or smeared:
        return (QualityIssue.BLUR,)
    return ()


def _check_frame(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise InvalidImage(f"quality gate needs a numpy RGB image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImage(
            f"quality gate needs an RGB colour image of shape HxWx3, got shape {image.shape}; "
            "a grayscale or RGBA frame cannot be checked for skin colour"
        )
    if image.dtype != np.uint8:
        raise InvalidImage(f"quality gate needs uint8 pixels (0-255), got dtype {image.dtype}")
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise InvalidImage(
            f"frame of {width}x{height} px is too small to assess; need at least {MIN_SIDE} px on each side"
        )
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise InvalidImage(f"frame of {width}x{height} px is too elongated to be a camera frame")


def _resize_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Area-average the frame so its long side is ``long_side`` pixels, cheaply.

    ``cv2.INTER_AREA`` is fast only for an exact 2x reduction (a 2x2 mean); for any other factor, 4x included,
    it takes a general path that costs as much as the rest of the gate. So the frame is halved while it stays at
    least twice the target, resampled bilinearly to exactly twice the target if it is not there already (never
    for 640x480 or 1280x960 frames), and then halved once more. The last 2x2 mean makes the bilinear step act
    at twice the analysis resolution, where it costs little detail: every camera size measures within a few
    percent of a direct INTER_AREA resize (see tests/test_quality.py), at a fraction of its cost.
    """
    height, width = image.shape[:2]
    scale = long_side / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    while max(height, width) >= 4 * long_side:
        # drop an odd last row/column so each halving is an exact 2x2 mean (a sliver of the frame)
        even = image[: height - height % 2, : width - width % 2]
        image = cv2.resize(even, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        height, width = image.shape[:2]
    double = (2 * target[0], 2 * target[1])
    if (width, height) != double:
        image = cv2.resize(image, double, interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, target, interpolation=cv2.INTER_AREA)


def _field_of_view(crushed: np.ndarray) -> np.ndarray:
    """255 where the frame shows the scene: everywhere but the crushed-black regions that touch its edge (the
    outside of a dermatoscope's round field of view), when what remains is a centred view of at least
    ``MIN_FIELD_OF_VIEW`` of the frame; otherwise the whole frame (mostly black, or black on one side: a
    covered lens or a shadow, which is an exposure problem, not a vignette)."""
    whole = np.full(crushed.shape, 255, np.uint8)
    count, labels = cv2.connectedComponents(crushed, connectivity=8)
    if count <= 1:
        return whole
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]  # 0 is the background (not crushed)
    if edge.size == 0:
        return whole
    outside = np.isin(labels, edge)
    if not (outside[0].any() and outside[-1].any() and outside[:, 0].any() and outside[:, -1].any()):
        return whole  # black on some sides only: not a surround
    view = np.where(outside, 0, 255).astype(np.uint8)
    moments = cv2.moments(view, binaryImage=True)
    height, width = crushed.shape
    if moments["m00"] < MIN_FIELD_OF_VIEW * height * width:
        return whole
    off_x = abs(moments["m10"] / moments["m00"] - (width - 1) / 2) / width
    off_y = abs(moments["m01"] / moments["m00"] - (height - 1) / 2) / height
    if max(off_x, off_y) > FIELD_OF_VIEW_OFF_CENTRE:
        return whole
    return view


def _skin_fraction(
    ycrcb: np.ndarray, luma: np.ndarray, cr: np.ndarray, cb: np.ndarray, settings: QualitySettings
) -> float:
    """Fraction of colour-measurable pixels whose chroma is in the skin/lesion band.

    The band is a box in (Cr, Cb) cut by Cr + Cb >= ``skin_crcb_sum_min``; it does not depend on luma, so darker
    skin (lower Y, chroma in the same band) counts as skin. Pixels too dark or too bright for their colour to
    mean anything are left out of both counts; exposure checks deal with frames made mostly of them.
    """
    measurable = cv2.countNonZero(cv2.inRange(luma, settings.skin_luma_min, settings.skin_luma_max))
    if measurable == 0:
        return 0.0
    in_box = cv2.inRange(
        ycrcb,
        (settings.skin_luma_min, settings.skin_cr_min, settings.skin_cb_min),
        (settings.skin_luma_max, settings.skin_cr_max, settings.skin_cb_max),
    )
    crcb_sum = cv2.add(cr, cb, dtype=cv2.CV_16U)  # 16-bit: the sum runs to 510
    pink_enough = cv2.inRange(crcb_sum, settings.skin_crcb_sum_min, 510)
    return cv2.countNonZero(cv2.bitwise_and(in_box, pink_enough)) / measurable


def _sharpness(grey: np.ndarray, luma_mean: float, analysis_size: int) -> float:
    """Fine-detail energy relative to coarse structure, in the sharpest tiles of the frame.

    Two difference-of-Gaussian bands of the luma: fine (sigma 1 to 2 px) and coarse (sigma 2 to 8 px), in
    pixels of a frame with a 256 px long side and scaled with ``analysis_size`` (at the default 160: 0.625 to
    1.25 and 1.25 to 5 px), so they cover the same image frequencies at any analysis size. Defocus removes the
    fine band first, so their ratio falls for a blurred frame whatever its contrast. Starting the fine band
    above the pixel scale keeps pixel noise out of it. The ratio is taken per tile (a 6x6 grid) and the 90th
    percentile over tiles is kept: dermoscopic skin is smooth almost everywhere and what is in focus is
    mostly the lesion edge and hairs; one dominant soft edge (a dermatoscope vignette) cannot then swamp it.
    Both bands scale with the square of the exposure, and so does the flat-tile floor, so the measure does not
    depend on how bright the skin is.
    """
    fine_sigma, mid_sigma, coarse_sigma = _band_sigmas(analysis_size)
    fine = cv2.GaussianBlur(grey, (0, 0), fine_sigma)
    mid = cv2.GaussianBlur(grey, (0, 0), mid_sigma)
    coarse = _coarse_blur(grey, coarse_sigma)
    return _band_ratio(fine, mid, coarse, luma_mean)


def _band_sigmas(analysis_size: int) -> tuple[float, float, float]:
    """``_BAND_SIGMAS`` in pixels of a frame whose long side is ``analysis_size``."""
    scale = analysis_size / _BAND_REFERENCE_SIZE
    fine, mid, coarse = (sigma * scale for sigma in _BAND_SIGMAS)
    return fine, mid, coarse


def _band_ratio(fine: np.ndarray, mid: np.ndarray, coarse: np.ndarray, luma_mean: float) -> float:
    """Fine-band over coarse-band energy per tile, from three low-passes of the luma (overwritten), and its
    ``_SHARPEST_TILES_PERCENTILE`` over the tiles; the flat-tile floor scales with the exposure."""
    cv2.subtract(fine, mid, dst=fine)
    cv2.multiply(fine, fine, dst=fine)  # fine-band energy per pixel
    cv2.subtract(mid, coarse, dst=mid)
    cv2.multiply(mid, mid, dst=mid)  # coarse-band energy per pixel
    rows, columns = _tile_indicators(*fine.shape)
    fine_tiles = rows @ fine @ columns  # per-tile means, as (TILES x H) @ (H x W) @ (W x TILES)
    coarse_tiles = rows @ mid @ columns
    flat = _FLAT_TILE_ENERGY * (max(luma_mean, 1.0) / _FLAT_TILE_REFERENCE_LUMA) ** 2
    ratio = (fine_tiles / (coarse_tiles + np.float32(flat))).ravel()
    return _percentile(ratio, _SHARPEST_TILES_PERCENTILE)


def _directional_sharpness(grey: np.ndarray, luma_mean: float, analysis_size: int) -> float:
    """``_sharpness``'s band ratio along the rows only and along the columns only (one-dimensional Gaussians),
    the smaller of the two. Motion blur removes the fine detail in one direction and leaves the other: the
    all-direction measure passed about half of the frames smeared 15 px sideways, this one 1-2 % (see
    benchmarks/quality_calibration.md)."""
    sigmas = _band_sigmas(analysis_size)
    return min(_band_ratio(*(_blur_1d(grey, sigma, along_rows) for sigma in sigmas), luma_mean)
               for along_rows in (True, False))


def _blur_1d(grey: np.ndarray, sigma: float, along_rows: bool) -> np.ndarray:
    """A Gaussian low-pass of ``sigma`` px in one direction only."""
    size = 2 * round(3 * sigma) + 1
    if along_rows:
        return cv2.GaussianBlur(grey, (size, 1), sigmaX=sigma, sigmaY=1e-6)
    return cv2.GaussianBlur(grey, (1, size), sigmaX=1e-6, sigmaY=sigma)


def _coarse_blur(grey: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian low-pass of ``sigma`` px, computed at quarter resolution (10x cheaper than directly)."""
    height, width = grey.shape
    quarter = cv2.resize(grey, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_AREA)
    # 0.95: the area average and the bilinear upsampling blur a little too (sigma 8 -> 1.9 at quarter size)
    quarter = cv2.GaussianBlur(quarter, (0, 0), sigma / 4 * 0.95)
    return cv2.resize(quarter, (width, height), interpolation=cv2.INTER_LINEAR)


@functools.lru_cache(maxsize=8)
def _tile_indicators(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Averaging matrices for the tile grid: ``rows @ image @ columns`` is the TILES x TILES grid of tile means.

    Tile edges are rounded to whole pixels, so tiles differ by at most one pixel in each direction. Cached per
    frame shape (read-only arrays): the gate sees one camera resolution over and over.
    """
    rows = np.ascontiguousarray(_averaging_matrix(height).T)
    columns = _averaging_matrix(width)
    rows.flags.writeable = columns.flags.writeable = False
    return rows, columns


def _averaging_matrix(length: int) -> np.ndarray:
    """(length x tiles) matrix whose column t averages the pixels of tile t along one axis."""
    tiles = min(_TILES, length)
    edges = np.round(np.arange(tiles + 1) * (length / tiles)).astype(np.intp)
    matrix = np.zeros((length, tiles), np.float32)
    for tile, (start, stop) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        matrix[start:stop, tile] = 1.0 / (stop - start)
    return matrix


def _percentile(values: np.ndarray, percentile: float) -> float:
    """``np.percentile`` (linear interpolation), by a partial sort: ~5 us on 36 values where it takes ~30 us."""
    position = (values.size - 1) * percentile / 100.0
    low = int(position)
    high = min(low + 1, values.size - 1)
    ordered = np.partition(values, (low, high))
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
