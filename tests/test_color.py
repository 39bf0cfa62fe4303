"""Colour constancy (Shades of Gray) on the device: the formula, its edge cases, and the preprocessor."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from edge.errors import ModelError
from edge.inference.base import TensorSpec
from edge.inference.manifest import InputSpec, load_pack
from edge.vision.color import DEFAULT_POWER, illuminant, shades_of_gray
from edge.vision.preprocess import Preprocessor


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _tinted(image: np.ndarray, gains) -> np.ndarray:
    return np.clip(np.rint(image.astype(np.float64) * np.asarray(gains)), 0, 255).astype(np.uint8)


def test_illuminant_is_the_minkowski_mean_of_the_pixels():
    image = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for power in (1.0, 6.0):
        direct = 255 * np.mean((image.reshape(-1, 3) / 255.0) ** power, axis=0) ** (1 / power)
        np.testing.assert_allclose(illuminant(image, power), direct, rtol=1e-9)


def test_a_tinted_lesion_comes_out_under_a_neutral_light(ham_images):
    lesion = _rgb(ham_images[0])
    for gains in ((1.25, 1.0, 0.8), (0.8, 0.95, 1.2)):
        corrected = shades_of_gray(_tinted(lesion, gains))
        estimate = illuminant(corrected)
        assert estimate.max() - estimate.min() < 2.0, estimate  # on the 0-255 scale
    # a per-channel gain changes only the brightness of the result (which Shades of Gray keeps), so two lights
    # on one lesion give the same image up to one scale and rounding (dimmed so that neither light clips)
    dim = _tinted(lesion, (0.7, 0.7, 0.7))
    warm, cold = _tinted(dim, (1.2, 1.0, 0.85)), _tinted(dim, (0.9, 1.0, 1.15))
    raw_gap = np.abs(warm.astype(int) - cold).mean()
    assert raw_gap > 5
    a, b = shades_of_gray(warm).astype(float), shades_of_gray(cold).astype(float)
    assert np.abs(a - b * (a.mean() / b.mean())).mean() < 1.0


def test_neutral_black_and_one_channel_images_are_safe():
    grey = np.full((16, 16, 3), 128, np.uint8)
    np.testing.assert_array_equal(shades_of_gray(grey), grey)  # a neutral light changes nothing
    black = np.zeros((16, 16, 3), np.uint8)
    np.testing.assert_array_equal(shades_of_gray(black), black)  # no division by zero, no NaN
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 200
    out = shades_of_gray(red)
    assert out.dtype == np.uint8 and np.all(out[..., 1:] == 0)
    with pytest.raises(ValueError, match="RGB uint8"):
        shades_of_gray(np.zeros((16, 16), np.uint8))


@pytest.mark.parametrize("tensor", [TensorSpec((1, 32, 32, 3), np.dtype(np.int8), scale=1 / 127.5, zero_point=-1),
                                    TensorSpec((1, 32, 32, 3), np.dtype(np.float32))])
def test_preprocessor_feeds_the_corrected_crop(ham_images, tensor):
    """The quantised path folds the correction into its lookup table: it must equal correcting, then
    quantising, and the float path must equal correcting, then normalising."""
    image = _tinted(_rgb(ham_images[1]), (1.2, 1.0, 0.8))
    plain = Preprocessor(InputSpec(width=32, height=32), tensor)
    corrected = Preprocessor(InputSpec(width=32, height=32, color_constancy="shades_of_gray"), tensor)
    crop = plain.crop_resize(image)
    np.testing.assert_array_equal(corrected(image), plain(shades_of_gray(crop)))
    assert not np.array_equal(corrected(image), plain(image))


def test_manifest_carries_colour_constancy_and_refuses_unknown_methods(tmp_path):
    from edge.paths import PROJECT_ROOT

    pack_dir = tmp_path / "pack"
    shutil.copytree(PROJECT_ROOT / "models" / "ham10000-mobilenetv2-int8", pack_dir)
    manifest = json.loads((pack_dir / "model.json").read_text())
    manifest["input"]["color_constancy"] = "shades_of_gray"
    (pack_dir / "model.json").write_text(json.dumps(manifest))
    spec = load_pack(pack_dir).manifest.input
    assert spec.color_constancy == "shades_of_gray"
    assert spec.color_constancy_power == DEFAULT_POWER  # what edge train's input pipeline uses
    manifest["input"]["color_constancy"] = "retinex"
    (pack_dir / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="color_constancy"):
        load_pack(pack_dir)
