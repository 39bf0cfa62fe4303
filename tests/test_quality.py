"""The capture quality gate on real images.

Real data: 20 HAM10000 dermoscopic JPEGs (a fixed slice of the sorted image folder, spread across the
dataset) and the shared cat.bmp / bird.bmp photos. Degraded versions are derived in the test exactly as
benchmarks/calibrate_quality.py derives them (on frames with a 256 px long side: Gaussian blur sigma 3, x0.15
darkening, x2.5 gain with clipping; the gate then measures at its own 160 px analysis size); the thresholds
under test are the shipped QualitySettings() defaults, calibrated there (see benchmarks/quality_calibration.md:
~99% of held-out originals pass).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge.errors import ImageError
from edge.paths import default_shared_dir
from edge.types import Quality, QualityIssue
from edge.vision.quality import InvalidImage, QualitySettings, assess

ANALYSIS = (256, 192)  # HAM images are 200x150; degradations are defined at long side 256 (DEGRADE_SIZE)
METRIC_NAMES = {"luma_mean", "dark_fraction", "bright_fraction", "skin_fraction", "sharpness", "field_of_view",
                "sharpness_directional"}
DARKEST_SKIN_LUMA = 37.0  # Monk Skin Tone 10 (#292420)


def _rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _scaled(rgb: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def _issues(image: np.ndarray, settings: QualitySettings | None = None) -> tuple[QualityIssue, ...]:
    return assess(image, settings or QualitySettings()).issues


@pytest.fixture(scope="module")
def pretrained() -> Path:
    path = Path(os.environ.get("EDGE_SHARED_DIR") or default_shared_dir()) / "pretrained"
    if not path.exists():
        pytest.fail(f"shared data missing: {path} (set EDGE_SHARED_DIR)")
    return path


@pytest.fixture(scope="module")
def skin(ham_images) -> list[np.ndarray]:
    """20 real dermoscopic images at analysis size: a fixed slice of the sorted folder, one every 500."""
    chosen = ham_images[100::500][:20]
    assert len(chosen) == 20
    return [cv2.resize(_rgb(p), ANALYSIS, interpolation=cv2.INTER_LINEAR) for p in chosen]


# ------------------------------------------------------------------------------------------ verdicts
def test_real_skin_images_pass(skin):
    # The slice is fixed, so this is deterministic. Calibration measured a ~1% miss rate on held-out originals
    # (lesion-dominated or partly clipped frames); none of these 20 is such a frame, so all must pass.
    verdicts = [assess(image, QualitySettings()) for image in skin]
    failures = [(i, q.issues, q.metrics) for i, q in enumerate(verdicts) if not q.ok]
    assert not failures


def test_blurred_skin_is_blur(skin):
    assert all(_issues(cv2.GaussianBlur(image, (0, 0), 3.0)) == (QualityIssue.BLUR,) for image in skin)


def _motion_blurred(image: np.ndarray, length: int, angle: float) -> np.ndarray:
    """The calibration's own motion blur (benchmarks/calibrate_quality.py), so both measure the same thing."""
    import importlib.util

    from edge.paths import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("calibrate_quality", PROJECT_ROOT / "benchmarks" / "calibrate_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.motion_blurred(image, length, angle)


def _with_hair(frame: np.ndarray, angle: float, spacing: int, seed: int) -> np.ndarray:
    """Straight dark hair, 2 px, anti-aliased, every ``spacing`` px, each within 1.5 degrees of ``angle``."""
    rng = np.random.default_rng(seed)
    height, width = frame.shape[:2]
    out = frame.copy()
    for y in np.arange(rng.uniform(0, spacing), height + width, spacing):
        slope = np.tan(np.radians(angle + rng.uniform(-1.5, 1.5)))
        start, end = (-width, round(y - slope * 1.5 * width)), (2 * width, round(y + slope * 1.5 * width))
        cv2.line(out, start, end, (60, 40, 30), 2, cv2.LINE_AA)
    return out


@pytest.mark.parametrize("angle", [0, 4, 6])
def test_sharp_frames_with_parallel_hair_near_an_axis_are_not_blur(ham_images, angle):
    """Straight hair a few degrees off an axis lowers the detail ratio along that axis: the directional
    measure alone called about a quarter of such sharp frames BLUR at 6 degrees (a review). It decides only
    for frames that are not plainly sharp."""
    frames = [cv2.resize(_rgb(path), (640, 480), interpolation=cv2.INTER_LINEAR) for path in ham_images[100::500][:20]]
    sharp = [frame for frame in frames if QualityIssue.BLUR not in _issues(frame)]
    haired = [_issues(_with_hair(frame, angle, 60, seed)) for seed, frame in enumerate(sharp)]
    assert sum(QualityIssue.BLUR not in issues for issues in haired) >= len(sharp) - 1, haired


@pytest.mark.parametrize("angle", [0, 90])
def test_motion_blur_is_blur(skin, angle):
    """A camera moved during the exposure smears one direction only: the all-direction measure kept about
    half of these frames "sharp" (detail across the smear survives); the measure along rows and columns
    separately does not."""
    verdicts = [_issues(_motion_blurred(image, 15, angle)) for image in skin]
    assert verdicts.count((QualityIssue.BLUR,)) >= 19, verdicts


def test_dark_skin_frame_is_underexposed(skin):
    assert all(_issues(_scaled(image, 0.15)) == (QualityIssue.UNDEREXPOSED,) for image in skin)


def test_bright_skin_frame_is_overexposed(skin):
    assert all(_issues(_scaled(image, 2.5)) == (QualityIssue.OVEREXPOSED,) for image in skin)


def test_overexposure_is_caught_at_camera_resolution(ham_images):
    # Skin clips in the red channel first; the clipped fraction counts any channel, so a red-heavy lesion image
    # over-exposed at full resolution is still OVEREXPOSED rather than mistaken for not-skin.
    red_heavy = _rgb(next(p for p in ham_images if p.name == "ISIC_0031906.jpg"))
    assert _issues(_scaled(red_heavy, 2.5)) == (QualityIssue.OVEREXPOSED,)


def test_darker_skin_tone_still_counts_as_skin(skin):
    darker = []
    for image in skin:
        ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)
        ycrcb[..., 0] *= 0.45  # darker tone: lower luma, same chroma
        darker.append(cv2.cvtColor(np.clip(ycrcb + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB))
    verdicts = [_issues(image) for image in darker]
    assert not any(QualityIssue.NOT_SKIN in issues for issues in verdicts)
    # One of the 20 (ISIC_0031906, already a dark red image: mean luma 88) falls to mean luma 40 and is then
    # honestly too dark. In calibration 292/294 darker-tone frames passed; the two that did not had originals
    # failing the same way (NOT_SKIN, BLUR), so darkening the tone never changed a verdict there.
    assert verdicts.count(()) >= 19
    assert set(verdicts) <= {(), (QualityIssue.UNDEREXPOSED,)}


def _with_mean_luma(image: np.ndarray, target: float) -> np.ndarray:
    """The same lesion on a skin of another tone: luma scaled to mean ``target``, chroma kept."""
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycrcb[..., 0] *= target / ycrcb[..., 0].mean()
    return cv2.cvtColor(np.clip(ycrcb + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def test_the_darkest_skin_in_good_light_is_not_too_dark(skin):
    """A floor of mean luma 42 refused every photo of the darkest Monk tone (luma 37) as "add more light",
    however well lit. Whole frames at that tone, and in light 15 % dimmer, must pass the exposure check; the
    x0.15 darkening of the same frames (light skin, about 3 stops under) is still refused."""
    for image in skin:
        for light in (1.0, 0.85):
            issues = _issues(_with_mean_luma(image, DARKEST_SKIN_LUMA * light))
            assert QualityIssue.UNDEREXPOSED not in issues, (light, issues)
        assert _issues(_scaled(image, 0.15)) == (QualityIssue.UNDEREXPOSED,)


def _vignetted(image: np.ndarray, diameter: float) -> np.ndarray:
    height, width = image.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (width // 2, height // 2), round(diameter * height / 2), 1, -1)
    return image * mask[..., None]


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (1920, 1080)])
def test_a_dermatoscopes_round_field_of_view_is_not_underexposure(skin, size):
    """The black outside a dermatoscope's circle made every such frame UNDEREXPOSED (half the frame crushed
    black), and on 16:9 cameras always: exposure is measured inside the field of view."""
    for image in skin:
        frame = _vignetted(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), 0.95)
        quality = assess(frame, QualitySettings())
        assert quality.ok, (size, quality.issues, quality.metrics)
        assert 0.3 < quality.metrics["field_of_view"] < 0.7


def test_a_frame_mostly_black_is_still_too_dark(skin):
    """Only a centred view inside a black surround counts as a field of view. A tiny lit spot in a black frame
    (a finger on the lens), or black over one side (a half-covered lens, a shadow), is judged as a whole
    frame, and it is UNDEREXPOSED, as before the field of view was measured."""
    for image in skin:
        assert _issues(_vignetted(image, 0.25)) == (QualityIssue.UNDEREXPOSED,)
        for side in (0.6, 0.69):
            covered = image.copy()
            covered[:, : int(side * covered.shape[1])] = 0  # the left of the frame black
            assert _issues(covered) == (QualityIssue.UNDEREXPOSED,), side
        assert _issues(_vignetted(image, 0.6)) != (QualityIssue.UNDEREXPOSED,)  # a small dermatoscope circle
        top = image.copy()
        top[: int(0.6 * top.shape[0])] = 0  # black across the top: touches three edges, surrounds nothing
        assert _issues(top) == (QualityIssue.UNDEREXPOSED,)


@pytest.mark.parametrize("shift", [(0.1, 0.0), (0.0, 0.1), (-0.1, 0.05)])
def test_a_dermatoscope_circle_a_little_off_centre_is_still_a_field_of_view(skin, shift):
    """A clip-on adapter is rarely aligned exactly: a circle 10 % off centre (a first version of the rule
    refused such frames at 8 %) is still a field of view."""
    for image in skin:
        frame = cv2.resize(image, (1280, 720), interpolation=cv2.INTER_LINEAR)
        mask = np.zeros(frame.shape[:2], np.uint8)
        centre = (round(640 + shift[0] * 1280), round(360 + shift[1] * 720))
        cv2.circle(mask, centre, round(0.85 * 720 / 2), 1, -1)
        quality = assess(frame * mask[..., None], QualitySettings())
        assert QualityIssue.UNDEREXPOSED not in quality.issues, (shift, quality.metrics)
    dim = _scaled(skin[0], 0.15)
    dim[:40, :60] = 0  # a dark region in a corner
    assert _issues(dim) == (QualityIssue.UNDEREXPOSED,)


@pytest.mark.parametrize("name", ["cat", "bird"])
def test_real_non_skin_photos_are_not_skin(pretrained, name):
    assert _issues(_rgb(pretrained / f"{name}.bmp")) == (QualityIssue.NOT_SKIN,)


def test_synthetic_non_skin_frames_are_not_skin():
    rng = np.random.default_rng(0)
    field = cv2.GaussianBlur(rng.random((192, 256)).astype(np.float32), (0, 0), 3.0)
    field = (field - field.min()) / (field.max() - field.min())
    foliage = np.stack([30 + 70 * field, 70 + 120 * field, 20 + 50 * field], axis=-1).astype(np.uint8)
    grey = np.full((192, 256, 3), 128, np.uint8)
    blue = np.full((192, 256, 3), (40, 80, 200), np.uint8)
    for frame in (grey, foliage, blue):
        assert _issues(frame) == (QualityIssue.NOT_SKIN,)


def test_black_frame_reports_exposure_not_skin():
    assert _issues(np.zeros((480, 640, 3), np.uint8)) == (QualityIssue.UNDEREXPOSED,)
    assert _issues(np.full((480, 640, 3), 255, np.uint8)) == (QualityIssue.OVEREXPOSED,)


def test_verdict_carries_advice_and_metrics(skin, pretrained):
    quality = assess(_rgb(pretrained / "cat.bmp"), QualitySettings())
    assert quality.reasons == [QualityIssue.NOT_SKIN.advice]
    assert "skin" in quality.reasons[0].lower()
    body = quality.to_json()
    assert body["ok"] is False and body["issues"] == ["not_skin"] and body["reasons"] == quality.reasons
    assert set(quality.metrics) == METRIC_NAMES
    assert all(type(v) is float for v in quality.metrics.values())
    blurred = assess(cv2.GaussianBlur(skin[0], (0, 0), 3.0), QualitySettings())
    assert blurred.reasons == [QualityIssue.BLUR.advice]
    assert all(issue.advice for issue in QualityIssue)


def test_camera_sized_frame_measures_like_the_small_image(skin):
    small = skin[0]
    camera = cv2.resize(small, (640, 480), interpolation=cv2.INTER_CUBIC)
    a, b = assess(small, QualitySettings()), assess(camera, QualitySettings())
    assert a.ok and b.ok
    assert abs(a.metrics["luma_mean"] - b.metrics["luma_mean"]) < 2
    assert abs(a.metrics["skin_fraction"] - b.metrics["skin_fraction"]) < 0.02
    assert abs(b.metrics["sharpness"] / a.metrics["sharpness"] - 1) < 0.15


@pytest.mark.parametrize("size", [(641, 481), (800, 600), (1280, 960), (1920, 1080)])
def test_other_camera_resolutions_measure_alike(skin, size):
    # The gate reaches its analysis size by 2x2 means plus at most one bilinear step at twice that size: an odd
    # size, a non-power-of-two ratio and a 16:9 frame must measure like a 640-wide frame of the same scene
    # (sharpness within 10%), and a blurred scene must stay BLUR at any size.
    wide = size[0] * 9 == size[1] * 16
    scene, blurred_scene = skin[0], cv2.GaussianBlur(skin[0], (0, 0), 3.0)
    if wide:  # crop the 256x192 scene to 256x144 so no frame is stretched
        scene, blurred_scene = scene[24:-24], blurred_scene[24:-24]
    reference_frame = cv2.resize(scene, (640, 360 if wide else 480), interpolation=cv2.INTER_CUBIC)
    reference = assess(reference_frame, QualitySettings())
    camera = assess(cv2.resize(scene, size, interpolation=cv2.INTER_CUBIC), QualitySettings())
    assert reference.ok and camera.ok
    assert abs(camera.metrics["luma_mean"] - reference.metrics["luma_mean"]) < 2
    assert abs(camera.metrics["skin_fraction"] - reference.metrics["skin_fraction"]) < 0.02
    assert abs(camera.metrics["sharpness"] / reference.metrics["sharpness"] - 1) < 0.1
    assert _issues(cv2.resize(blurred_scene, size, interpolation=cv2.INTER_CUBIC)) == (QualityIssue.BLUR,)


# ------------------------------------------------------------------------------------------ settings
def test_disabled_gate_accepts_everything():
    off = QualitySettings(enabled=False)
    assert assess(np.zeros((480, 640, 3), np.uint8), off) == Quality()
    assert assess(np.full((100, 100, 3), 128, np.uint8), off).ok


def test_settings_reject_unknown_keys():
    with pytest.raises(ValidationError, match="extra"):
        QualitySettings(blur_threshold=10)


@pytest.mark.parametrize(
    "field, value",
    [("blur_min", -1.0), ("skin_min_fraction", 1.5), ("analysis_size", 10), ("dark_fraction_max", -0.1),
     ("skin_cr_max", 300), ("luma_mean_min", 256.0)],
)  # fmt: skip
def test_settings_reject_out_of_range(field, value):
    with pytest.raises(ValidationError, match=field):
        QualitySettings(**{field: value})


def test_settings_reject_inverted_ranges():
    with pytest.raises(ValidationError, match="luma_mean_min"):
        QualitySettings(luma_mean_min=200, luma_mean_max=100)
    with pytest.raises(ValidationError, match="skin_cb_min"):
        QualitySettings(skin_cb_min=150, skin_cb_max=140)


def test_every_setting_is_documented():
    schema = QualitySettings.model_json_schema()
    assert all(prop.get("description") for prop in schema["properties"].values())
    assert schema.get("additionalProperties") is False


def test_stricter_settings_change_the_verdict(skin):
    assert _issues(skin[0], QualitySettings(blur_min=5.0)) == (QualityIssue.BLUR,)
    assert _issues(skin[0], QualitySettings(skin_min_fraction=1.0, skin_cr_min=250, skin_cr_max=255)) == (
        QualityIssue.NOT_SKIN,
    )


# ----------------------------------------------------------------------------------------- odd input
@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((8, 8, 3), np.uint8), "too small"),
        (np.zeros((480, 1, 3), np.uint8), "too small"),
        (np.zeros((16, 400, 3), np.uint8), "elongated"),
        (np.zeros((150, 200), np.uint8), "RGB"),
        (np.zeros((150, 200, 4), np.uint8), "RGB"),
        (np.zeros((150, 200, 3), np.float32), "uint8"),
        (np.zeros((0, 0, 3), np.uint8), "too small"),
    ],
    ids=["8x8", "1-pixel-wide", "strip", "grayscale", "rgba", "float", "empty"],
)
def test_unusable_arrays_raise_a_clear_error(image, message):
    with pytest.raises(InvalidImage, match=message) as caught:
        assess(image, QualitySettings())
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ImageError)


def test_not_an_array_raises():
    with pytest.raises(InvalidImage, match="numpy"):
        assess([[0, 0, 0]], QualitySettings())  # type: ignore[arg-type]


def test_smallest_and_non_contiguous_frames_are_measured(skin):
    tiny = cv2.resize(skin[0], (16, 16), interpolation=cv2.INTER_AREA)
    assert set(assess(tiny, QualitySettings()).metrics) == METRIC_NAMES
    flipped = skin[0][:, ::-1]  # a view with negative strides, as cameras and crops produce
    assert assess(flipped, QualitySettings()).ok
