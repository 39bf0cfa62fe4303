"""Calibrate the capture quality gate (edge/vision/quality.py) on real HAM10000 dermoscopic images.

    cd /work/main && .venv/bin/python benchmarks/calibrate_quality.py            # 84 images per dx class
    cd /work/main && .venv/bin/python benchmarks/calibrate_quality.py --per-class 20   # quick look

What it does:

1. Samples ``--per-class`` images from each of the 7 dx classes in HAM10000_metadata.csv with a fixed seed
   (stratified, so rare classes such as vasc and df are present) and splits every class in half:
   the *selection* half chooses thresholds, the *report* half measures them.
2. Resizes each image to long side 256 (DEGRADE_SIZE: the size the first calibration measured at, kept so that
   every degradation means the same as it did then) and derives degraded versions there:
   Gaussian blur sigma 3 (should be BLUR), x0.15 darkening (UNDEREXPOSED), x2.5 gain with clipping
   (OVEREXPOSED), and a synthetic darker skin tone (luma x0.45, chroma kept; should still pass).
   Extras that are reported but never used to choose: blur + sensor noise (sigma 2 grey levels), RGB x0.45
   darker skin (chroma shrinks with it), and blurred darker skin.
3. Non-skin frames: cat.bmp, bird.bmp (grace_hopper.bmp is reported for information: a portrait is partly
   skin), flat grey, green foliage-like noise, flat blue, black. They should fail NOT_SKIN or exposure.
4. Prints metric percentiles on the selection half, the thresholds chosen from them, and then pass/reject
   rates on the report half for both the chosen values and the shipped ``QualitySettings()`` defaults.
   The gate itself resizes every frame to its own ``analysis_size`` (160 by default) before measuring, as it
   does for camera frames.
5. Times ``assess`` per frame (p50 over 200 frames at 640x480 and at 200x150), interleaved in the same loop
   with a reference -- the preprocess resize of the same frame to 224x224 -- so the cost reads as a ratio.

Choice rules (selection half only):
  * skin chroma box: 0.5th..99.5th percentile of the originals' measurable-pixel Cr and Cb, with the Cr floor
    above neutral grey's 128; the Cr+Cb floor is a design value, 255 (see CRCB_SUM_FLOOR and the trade-off
    table the run prints);
  * skin_min_fraction: 1st percentile of the originals' skin fraction, minus 0.05;
  * blur_min, luma_mean_min, bright_fraction_max: midpoint between the 1st/99th percentile of the frames that
    must pass (originals and darker-tone versions) and the 99th/1st percentile of the degraded set that must
    fail (blurred, darkened, brightened);
  * luma_mean_max: brightest frame that must pass + 10 (the clipped fraction separates over-exposure on its
    own; a tight mean ceiling would only reject pale skin);
  * dark_fraction_max: design backstop 0.5 (x0.15 darkening leaves pixels just above black, the mean catches it).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.types import QualityIssue  # noqa: E402
from edge.vision.quality import QualitySettings, assess, measure  # noqa: E402

HAM = Path("/work/shared/data/ham10000")
PRETRAINED = Path("/work/shared/pretrained")
# Degradations (blur sigma, noise, synthetic frames) are defined on frames with this long side, whatever the
# gate's analysis_size: sigma 3 here is sigma 1.9 at the default analysis size of 160.
DEGRADE_SIZE = 256
PERCENTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)
NEUTRAL = 128  # Cr and Cb of any grey
# Cr+Cb floor: one level below neutral (256). HAM skin is pinker (its 1st percentile is ~259), and a floor there
# rejects more tan/orange non-skin, but it also drops near-neutral very pale and very dark skin (Monk 1, 2, 9, 10);
# grey itself is kept out by the Cr floor. The trade-off table at the end of the run measures this choice.
CRCB_SUM_FLOOR = 255
METRICS = ("luma_mean", "dark_fraction", "bright_fraction", "skin_fraction", "sharpness", "sharpness_directional")

# Published Monk Skin Tone scale swatches (sRGB), used only as a pixel-colour diagnostic.
MONK_SWATCHES = {
    "MST01": "f6ede4", "MST02": "f3e7db", "MST03": "f7ead0", "MST04": "eadaba", "MST05": "d7bd96",
    "MST06": "a07e56", "MST07": "825c43", "MST08": "604134", "MST09": "3a312a", "MST10": "292420",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- data
def sample_ids(per_class: int, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    by_dx: dict[str, list[str]] = defaultdict(list)
    with open(HAM / "HAM10000_metadata.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_dx[row["dx"]].append(row["image_id"])
    rng = random.Random(seed)
    selection, report = [], []
    for dx in sorted(by_dx):
        chosen = rng.sample(sorted(by_dx[dx]), min(per_class, len(by_dx[dx])))
        half = len(chosen) // 2
        selection += [(dx, i) for i in chosen[:half]]
        report += [(dx, i) for i in chosen[half:]]
    return selection, report


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def at_degrade_size(rgb: np.ndarray) -> np.ndarray:
    """The image with its long side at DEGRADE_SIZE, resized exactly as the first calibration did (INTER_LINEAR up,
    INTER_AREA down), so the originals and their degraded versions are the same frames as then."""
    height, width = rgb.shape[:2]
    scale = DEGRADE_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR)


def blurred(rgb: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def scaled(rgb: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def darker_skin(rgb: np.ndarray, luma_gain: float = 0.45) -> np.ndarray:
    """Shift toward a darker skin tone: scale luma, keep chroma (Cr, Cb)."""
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycrcb[..., 0] *= luma_gain
    return cv2.cvtColor(np.clip(ycrcb + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


# The darkest Monk Skin Tone swatch (MST 10, #292420) has luma 37; in light 15 % dimmer than the swatch's it is
# 31.5. Whole frames recoloured to that mean luma must pass: a mean-luma floor above it refused every photo of
# the darkest skin as "too dark", however well lit (a review measured 150 of 150).
DARKEST_SKIN_LUMA = 37.0 * 0.85


def to_mean_luma(rgb: np.ndarray, target: float) -> np.ndarray:
    """The frame's luma scaled so its mean is ``target``, chroma (Cr, Cb) kept: the same lesion on darker skin."""
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycrcb[..., 0] *= target / max(float(ycrcb[..., 0].mean()), 1.0)
    return cv2.cvtColor(np.clip(ycrcb + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def vignetted(rgb: np.ndarray, diameter: float = 0.9) -> np.ndarray:
    """A dermatoscope's round field of view: black outside a centred circle ``diameter`` x the frame height."""
    height, width = rgb.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (width // 2, height // 2), round(diameter * height / 2), 1, -1)
    return rgb * mask[..., None]


def motion_blurred(rgb: np.ndarray, length: int, angle: float) -> np.ndarray:
    """The camera moved ``length`` px (at DEGRADE_SIZE) in direction ``angle`` (degrees) while exposing."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    turn = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
    kernel = cv2.warpAffine(kernel, turn, (length, length))
    return cv2.filter2D(rgb, -1, kernel / kernel.sum())


def with_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rgb + rng.normal(0.0, sigma, rgb.shape), 0, 255).astype(np.uint8)


VARIANTS = {
    "original": lambda rgb, rng: rgb,
    "blurred": lambda rgb, rng: blurred(rgb),
    "dark": lambda rgb, rng: scaled(rgb, 0.15),
    "bright": lambda rgb, rng: scaled(rgb, 2.5),
    "darker_skin": lambda rgb, rng: darker_skin(rgb),
    "darkest_skin": lambda rgb, rng: to_mean_luma(rgb, DARKEST_SKIN_LUMA),
    "vignette": lambda rgb, rng: vignetted(rgb),
    # extras: reported, never used to choose a threshold
    "blurred+noise2": lambda rgb, rng: with_noise(blurred(rgb), 2.0, rng),
    "darker_skin_rgb": lambda rgb, rng: scaled(rgb, 0.45),
    "darker_skin+blurred": lambda rgb, rng: blurred(darker_skin(rgb)),
    "motion9_0": lambda rgb, rng: motion_blurred(rgb, 9, 0),
    "motion15_0": lambda rgb, rng: motion_blurred(rgb, 15, 0),
    "motion15_90": lambda rgb, rng: motion_blurred(rgb, 15, 90),
    "motion15_45": lambda rgb, rng: motion_blurred(rgb, 15, 45),
}
EXPECTED = {"blurred": QualityIssue.BLUR, "dark": QualityIssue.UNDEREXPOSED, "bright": QualityIssue.OVEREXPOSED,
            "blurred+noise2": QualityIssue.BLUR, "darker_skin+blurred": QualityIssue.BLUR,
            "motion9_0": QualityIssue.BLUR, "motion15_0": QualityIssue.BLUR, "motion15_90": QualityIssue.BLUR,
            "motion15_45": QualityIssue.BLUR}  # fmt: skip


def non_skin_frames(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    h, w = size * 3 // 4, size
    field = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3.0)
    field = (field - field.min()) / (field.max() - field.min())
    foliage = np.stack([30 + 70 * field, 70 + 120 * field, 20 + 50 * field], axis=-1)
    frames = {name: load_rgb(PRETRAINED / f"{name}.bmp") for name in ("cat", "bird", "grace_hopper")}
    frames |= {
        "flat_grey": np.full((h, w, 3), 128, np.uint8),
        "green_foliage_noise": with_noise(foliage.astype(np.uint8), 4.0, rng),
        "flat_blue": np.full((h, w, 3), (40, 80, 200), np.uint8),
        "black": np.zeros((h, w, 3), np.uint8),
    }
    return frames


# ----------------------------------------------------------------------------------------- measuring
def measure_all(images: list[np.ndarray], settings: QualitySettings, seed: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {v: defaultdict(list) for v in VARIANTS}
    for rgb in images:
        for variant, make in VARIANTS.items():
            for name, value in measure(make(rgb, rng), settings).items():
                out[variant][name].append(value)
    return {v: {m: np.array(vals) for m, vals in d.items()} for v, d in out.items()}


def verdicts(images: list[np.ndarray], settings: QualitySettings, seed: int) -> dict[str, list[tuple]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple]] = defaultdict(list)
    for rgb in images:
        for variant, make in VARIANTS.items():
            out[variant].append(assess(make(rgb, rng), settings).issues)
    return out


def skin_pixel_stats(images: list[np.ndarray], settings: QualitySettings) -> np.ndarray:
    pixels = []
    for rgb in images:
        ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).reshape(-1, 3)[::5].astype(np.int32)
        luma = ycrcb[:, 0]
        pixels.append(ycrcb[(luma >= settings.skin_luma_min) & (luma <= settings.skin_luma_max)])
    return np.concatenate(pixels)


# ------------------------------------------------------------------------------------------ choosing
def midpoint(must_pass: np.ndarray, must_fail: np.ndarray, fail_is_low: bool) -> float:
    """Midpoint between the 1st/99th percentiles of the two populations (warn when they overlap)."""
    if fail_is_low:
        good, bad = np.percentile(must_pass, 1), np.percentile(must_fail, 99)
        overlap = good <= bad
    else:
        good, bad = np.percentile(must_pass, 99), np.percentile(must_fail, 1)
        overlap = good >= bad
    if overlap:
        print(f"  WARNING: populations overlap (pass p={good:.4f}, fail p={bad:.4f})")
    return float((good + bad) / 2)


def choose_skin_box(pixels: np.ndarray, base: QualitySettings) -> QualitySettings:
    """Chroma box from the originals' measurable pixels; Cr+Cb floor by design (see module docstring)."""
    cr, cb = pixels[:, 1], pixels[:, 2]
    print(f"  skin box: Cr/Cb 0.5th..99.5th pixel percentiles; Cr floor at least {NEUTRAL + 1} (neutral grey is "
          f"Cr {NEUTRAL}); Cr+Cb floor {CRCB_SUM_FLOOR} by design (HAM 1st percentile would be "
          f"{np.percentile(cr + cb, 1):.0f})")  # fmt: skip
    return base.model_copy(
        update=dict(
            skin_cr_min=max(int(np.floor(np.percentile(cr, 0.5))), NEUTRAL + 1),
            skin_cr_max=int(np.ceil(np.percentile(cr, 99.5))),
            skin_cb_min=int(np.floor(np.percentile(cb, 0.5))),
            skin_cb_max=int(np.ceil(np.percentile(cb, 99.5))),
            skin_crcb_sum_min=CRCB_SUM_FLOOR,
        )
    )


def choose_thresholds(sel: dict[str, dict[str, np.ndarray]], base: QualitySettings) -> QualitySettings:
    good = {m: np.concatenate([sel["original"][m], sel["darker_skin"][m]]) for m in METRICS}
    # the exposure floor must also pass the darkest skin tone and a dermatoscope's round field of view
    exposure_good = np.concatenate([good["luma_mean"], sel["darkest_skin"]["luma_mean"], sel["vignette"]["luma_mean"]])
    chosen = {}
    for key, metric, fail_set, fail_is_low, passing in (
        ("blur_min", "sharpness", "blurred", True, good["sharpness"]),
        ("blur_directional_min", "sharpness_directional", "blurred", True, good["sharpness_directional"]),
        ("luma_mean_min", "luma_mean", "dark", True, exposure_good),
        ("bright_fraction_max", "bright_fraction", "bright", False, good["bright_fraction"]),
    ):
        what = "originals + darker skin" + (" + darkest skin + vignette" if key == "luma_mean_min" else "")
        print(f"  {key}: midpoint of {metric} ({what}) vs {fail_set}")
        chosen[key] = midpoint(passing, sel[fail_set][metric], fail_is_low)
    # The clipped-white fraction separates the overexposed set on its own; the mean-luma ceiling only needs
    # to stay clear of every good frame (very pale skin is legitimately bright).
    chosen["luma_mean_max"] = min(float(good["luma_mean"].max()) + 10.0, 250.0)
    print(f"  luma_mean_max: brightest good frame + 10 (bright set p1 = {np.percentile(sel['bright']['luma_mean'], 1):.1f})")
    # Crushed-black fraction does not separate x0.15 darkening (its pixels sit just above the black level;
    # the mean catches them). It stays a design backstop: more than half the frame crushed black.
    chosen["dark_fraction_max"] = 0.5
    print(f"  dark_fraction_max: design value 0.5 (good frames max {good['dark_fraction'].max():.3f})")
    chosen["skin_min_fraction"] = float(np.percentile(sel["original"]["skin_fraction"], 1)) - 0.05
    print("  skin_min_fraction: 1st percentile of originals' skin_fraction - 0.05")
    return base.model_copy(update=chosen)


# ----------------------------------------------------------------------------------------- reporting
def print_distributions(sel: dict[str, dict[str, np.ndarray]]) -> None:
    print("\n## Metric percentiles on the selection half (" + ", ".join(f"p{p}" for p in PERCENTILES) + ")")
    for metric in METRICS:
        print(f"\n{metric}")
        for variant, values in sel.items():
            row = " ".join(f"{v:9.4f}" for v in np.percentile(values[metric], PERCENTILES))
            print(f"  {variant:20s} {row}")


def rate_table(name: str, ver: dict[str, list[tuple]], dxs: list[str]) -> None:
    n = len(ver["original"])
    print(f"\n## Report half ({n} images per set) with {name}\n")
    print("| set | expected | rate | rejected for any reason | n |\n|---|---|---|---|---|")
    ok = sum(not issues for issues in ver["original"])
    print(f"| original | pass | {ok / n:.1%} | {1 - ok / n:.1%} | {n} |")
    for variant, issue in EXPECTED.items():
        hit = sum(issue in issues for issues in ver[variant])
        rejected = sum(bool(issues) for issues in ver[variant])
        note = " (extra)" if variant not in ("blurred", "dark", "bright") else ""
        print(f"| {variant}{note} | {issue.value} | {hit / n:.1%} | {rejected / n:.1%} | {n} |")
    for variant in ("darker_skin", "darker_skin_rgb", "darkest_skin", "vignette"):
        skin = sum(QualityIssue.NOT_SKIN not in issues for issues in ver[variant])
        passed = sum(not issues for issues in ver[variant])
        note = " (extra)" if variant.endswith("rgb") else ""
        print(f"| {variant}{note} | not NOT_SKIN | {skin / n:.1%} | | {n} |")
        print(f"| {variant}{note} | pass (no issue) | {passed / n:.1%} | {1 - passed / n:.1%} | {n} |")
    fails = [(dx, issues) for dx, issues in zip(dxs, ver["original"], strict=True) if issues]
    by_dx = defaultdict(lambda: [0, 0])
    for dx, issues in zip(dxs, ver["original"], strict=True):
        by_dx[dx][0] += not issues
        by_dx[dx][1] += 1
    print("\noriginal pass rate by dx: " + ", ".join(f"{dx} {p}/{t}" for dx, (p, t) in sorted(by_dx.items())))
    print("original failures: " + (", ".join(f"{dx}:{'+'.join(i.value for i in iss)}" for dx, iss in fails) or "none"))
    for variant in ("darker_skin", "darker_skin_rgb", "darkest_skin", "vignette"):
        counts = defaultdict(int)
        for issues in ver[variant]:
            counts["+".join(i.value for i in issues) or "pass"] += 1
        print(f"{variant} outcomes: {dict(counts)}")


def print_non_skin(settings: QualitySettings, frames: dict[str, np.ndarray]) -> None:
    print("\n| non-skin frame | skin_fraction | luma_mean | issues |\n|---|---|---|---|")
    for name, rgb in frames.items():
        q = assess(rgb, settings)
        issues = ", ".join(i.value for i in q.issues) or "PASS"
        print(f"| {name} | {q.metrics['skin_fraction']:.3f} | {q.metrics['luma_mean']:.1f} | {issues} |")


def print_swatches(settings: QualitySettings) -> None:
    print("\n| Monk swatch | Y | Cr | Cb | Cr+Cb | skin-coloured |\n|---|---|---|---|---|---|")
    for name, hexcode in MONK_SWATCHES.items():
        rgb = np.array([[[int(hexcode[i : i + 2], 16) for i in (0, 2, 4)]]], np.uint8)
        y, cr, cb = (int(v) for v in cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[0, 0])
        skin = _swatch_is_skin(hexcode, settings)
        print(f"| {name} #{hexcode} | {y} | {cr} | {cb} | {cr + cb} | {'yes' if skin else 'no'} |")


def print_pinkness_tradeoff(images: list[np.ndarray], frames: dict[str, np.ndarray], base: QualitySettings) -> None:
    """What lowering skin_crcb_sum_min (admitting yellower skin renderings) costs and buys."""
    print("\n| skin_crcb_sum_min | originals pass | cat skin_fraction | cat | flat_grey | Monk swatches skin-coloured |")
    print("|---|---|---|---|---|---|")
    for floor in (259, 257, 255, 252, 250, 247):
        settings = base.model_copy(update={"skin_crcb_sum_min": floor})
        passed = sum(assess(rgb, settings).ok for rgb in images) / len(images)
        cat, grey = assess(frames["cat"], settings), assess(frames["flat_grey"], settings)
        swatches = sum(_swatch_is_skin(hexcode, settings) for hexcode in MONK_SWATCHES.values())
        verdict = lambda q: ", ".join(i.value for i in q.issues) or "PASS"  # noqa: E731
        print(f"| {floor} | {passed:.1%} | {cat.metrics['skin_fraction']:.3f} | {verdict(cat)} | {verdict(grey)} "
              f"| {swatches}/{len(MONK_SWATCHES)} |")  # fmt: skip


def _swatch_is_skin(hexcode: str, settings: QualitySettings) -> bool:
    rgb = np.array([[[int(hexcode[i : i + 2], 16) for i in (0, 2, 4)]]], np.uint8)
    y, cr, cb = (int(v) for v in cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[0, 0])
    return (
        settings.skin_luma_min <= y <= settings.skin_luma_max
        and settings.skin_cr_min <= cr <= settings.skin_cr_max
        and settings.skin_cb_min <= cb <= settings.skin_cb_max
        and cr + cb >= settings.skin_crcb_sum_min
    )


def print_laplacian_baseline(images: list[np.ndarray], seed: int) -> None:
    """The textbook measure, variance of the Laplacian, on the same frames: why the gate does not use it."""
    rng = np.random.default_rng(seed)
    sets = {"original": [], "blurred": [], "blurred+noise2": [], "darker_skin": []}
    for rgb in images:
        for name in sets:
            frame = VARIANTS[name](rgb, rng)
            luma = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb)[..., 0]
            sets[name].append(cv2.Laplacian(luma, cv2.CV_32F, ksize=3).var())
    print("\n| set | p1 | p50 | p99 |\n|---|---|---|---|")
    for name, values in sets.items():
        p1, p50, p99 = np.percentile(values, (1, 50, 99))
        print(f"| {name} | {p1:.1f} | {p50:.1f} | {p99:.1f} |")


def print_timing(images: list[np.ndarray], settings: QualitySettings, frames: int = 200) -> None:
    """p50 per-frame cost of ``assess`` against the preprocess resize to 224x224, interleaved frame by frame.

    ``images`` are HAM images at their own 200x150; each is timed as it is and upscaled to a 640x480 camera
    frame. The reference is the model-input resize of the same frame (INTER_AREA when shrinking, INTER_LINEAR
    when enlarging, as ``edge.vision.preprocess`` does), timed in the same loop so machine load hits both
    alike. Each frame is copied in just before it is timed, as a camera capture writes it, and the two take
    turns going first so neither gets the other's warmed-up cache.
    """
    print("\n| frame | assess p50 | assess p90 | reference: resize to 224x224, p50 | ratio of p50s | frames |")
    print("|---|---|---|---|---|---|")
    for size in ((640, 480), (200, 150)):
        sources = [cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR) for rgb in images]
        interpolation = cv2.INTER_AREA if size[0] > 224 else cv2.INTER_LINEAR
        gate, reference = [], []
        for i in range(frames + 20):  # the first 20 warm up
            frame = sources[i % len(sources)].copy()
            gate_ms, reference_ms = _time_pair(
                lambda: assess(frame, settings),  # noqa: B023 (called at once, inside this iteration)
                lambda: cv2.resize(frame, (224, 224), interpolation=interpolation),  # noqa: B023
                in_order=i % 2 == 0,
            )
            if i >= 20:
                gate.append(gate_ms)
                reference.append(reference_ms)
        g50, g90, r50 = np.percentile(gate, 50), np.percentile(gate, 90), np.percentile(reference, 50)
        name = "INTER_AREA" if interpolation == cv2.INTER_AREA else "INTER_LINEAR"
        print(f"| {size[0]}x{size[1]} | {g50:.3f} ms | {g90:.3f} ms | {r50:.3f} ms ({name}) "
              f"| {g50 / r50:.2f} | {frames} |")  # fmt: skip


def _time_pair(first, second, in_order: bool) -> tuple[float, float]:
    """Milliseconds taken by ``first`` and by ``second``, run in that order if ``in_order``, else reversed."""
    took = {}
    for key, step in ((0, first), (1, second)) if in_order else ((1, second), (0, first)):
        start = time.perf_counter()
        step()
        took[key] = (time.perf_counter() - start) * 1e3
    return took[0], took[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=84, help="images sampled per dx class (default 84)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    shipped = QualitySettings()
    selection, report = sample_ids(args.per_class, args.seed)
    print(f"HAM10000 sample: {len(selection)} selection + {len(report)} report images "
          f"({args.per_class} per dx class, seed {args.seed})")  # fmt: skip

    def load(ids: list[tuple[str, str]]) -> list[np.ndarray]:
        return [at_degrade_size(load_rgb(HAM / "images" / f"{i}.jpg")) for _, i in ids]

    started = time.perf_counter()
    sel_images, rep_images = load(selection), load(report)

    pixels = skin_pixel_stats(sel_images, shipped)
    print("\nmeasurable skin-pixel chroma (selection originals): "
          + ", ".join(f"{n} p0.5/p1/p50/p99/p99.5 = " + "/".join(f"{np.percentile(v, p):.0f}" for p in (0.5, 1, 50, 99, 99.5))
                      for n, v in (("Cr", pixels[:, 1]), ("Cb", pixels[:, 2]), ("Cr+Cb", pixels[:, 1] + pixels[:, 2]))))  # fmt: skip
    # Skin fractions depend on the chroma box, so choose the box first, then measure with it.
    print("\n## Skin chroma box (selection half)")
    box = choose_skin_box(pixels, shipped)
    sel = measure_all(sel_images, box, args.seed)
    print_distributions(sel)
    print("\n## Choosing thresholds (selection half)")
    chosen = choose_thresholds(sel, box)
    print("\n| setting | chosen | shipped default |\n|---|---|---|")
    for key, value in chosen.model_dump().items():
        print(f"| {key} | {value:.4g} | {getattr(shipped, key):.4g} |" if isinstance(value, float)
              else f"| {key} | {value} | {getattr(shipped, key)} |")  # fmt: skip

    rep_dxs = [dx for dx, _ in report]
    rate_table("the chosen thresholds", verdicts(rep_images, chosen, args.seed + 1), rep_dxs)
    rate_table("the shipped QualitySettings() defaults", verdicts(rep_images, shipped, args.seed + 1), rep_dxs)
    frames = non_skin_frames(DEGRADE_SIZE)
    print("\n## Non-skin frames, chosen thresholds (non-skin frames are too few to split: not held out)")
    print_non_skin(chosen, frames)
    print("\n## Non-skin frames, shipped defaults")
    print_non_skin(shipped, frames)
    print("\n## Monk Skin Tone swatch colours against the shipped skin chroma rule (pixel colour only)")
    print_swatches(shipped)
    print("\n## Trade-off: lowering the Cr+Cb (pinkness) floor, shipped defaults otherwise, report-half originals")
    print_pinkness_tradeoff(rep_images, frames, shipped)
    print("\n## Baseline sharpness measure: variance of the Laplacian (3x3), selection half")
    print_laplacian_baseline(sel_images, args.seed)
    print(f"\n## Per-frame cost of assess (shipped defaults; analysis_size {shipped.analysis_size})")
    print_timing([load_rgb(HAM / "images" / f"{i}.jpg") for _, i in report[::15][:20]], shipped)
    print(f"\ntotal calibration time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
