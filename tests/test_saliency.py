"""Occlusion saliency points at what drove the answer, on real models."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import PRETRAINED, run_edge
from edge.config import InferenceSettings
from edge.inference import Classifier, load_pack
from edge.types import Quality
from edge.vision.decode import read_image_file


def test_saliency_finds_the_patch_that_decides_the_class(colour_pack):
    classifier = Classifier.open(load_pack(colour_pack), "jetson",
                                 InferenceSettings(jetson={"providers": ["CPUExecutionProvider"]}))
    image = np.full((224, 224, 3), 90, np.uint8)
    image[150:210, 20:80] = (255, 0, 0)  # a red patch, bottom left, makes the mean colour red
    result = classifier.classify(image, Quality())
    assert result.label == "red"
    saliency = classifier.saliency(image)
    peak_y, peak_x = np.unravel_index(np.argmax(saliency.heatmap), saliency.heatmap.shape)
    assert 130 <= peak_y <= 224 and 0 <= peak_x <= 100
    assert saliency.heatmap[:80, 140:].max() < 0.3  # far from the patch, hiding the image changes little
    assert saliency.overlay.shape == (224, 224, 3) and saliency.png()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saliency_on_the_int8_model(imagenet_pack):
    classifier = Classifier.open(load_pack(imagenet_pack), "cpu", InferenceSettings())
    saliency = classifier.saliency(read_image_file(PRETRAINED / "grace_hopper.bmp"))
    assert classifier.pack.manifest.labels[saliency.target] == "military uniform"
    assert 0.0 <= saliency.heatmap.min() and saliency.heatmap.max() == 1.0


def test_saliency_explains_the_view_the_model_classified(tmp_path, imagenet_pack):
    """With a central crop (crop_fraction < 1) the occluded views must not be cropped a second time: the
    saliency's own unoccluded score is the classification's probability."""
    from edge.inference.manifest import InputSpec, read_labels, write_pack

    pack = write_pack(tmp_path / "pack", model_files={"cpu": imagenet_pack / "model.tflite"},
                      labels=read_labels(PRETRAINED / "imagenet_labels.txt"), name="cropped", version="1",
                      licence="test", input_spec=InputSpec(width=224, height=224, crop_fraction=0.6))
    classifier = Classifier.open(pack, "cpu", InferenceSettings())
    image = read_image_file(PRETRAINED / "grace_hopper.bmp")
    result = classifier.classify(image, Quality())
    saliency = classifier.saliency(image)
    assert classifier.pack.manifest.labels[saliency.target] == result.label
    assert saliency.base_probability == pytest.approx(result.probabilities[result.label], abs=1e-6)
    classifier.close()


def test_classify_cli_writes_saliency_overlays(imagenet_pack, tmp_path):
    result = run_edge("classify", "--json", "--model", str(imagenet_pack), "--saliency", str(tmp_path),
                      str(PRETRAINED / "cat.bmp"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cat.saliency.png").read_bytes()[:4] == b"\x89PNG"


def test_saliency_of_a_model_whose_input_is_not_square():
    """The manifest allows width != height; the heatmap must cover the view on both axes (it crashed)."""
    from edge.vision.saliency import occlusion_saliency

    view = np.full((160, 224, 3), 90, np.uint8)
    view[100:150, 170:220] = (255, 0, 0)  # bottom right decides

    def score(image: np.ndarray) -> np.ndarray:
        red = float((image[..., 0].astype(int) - image[..., 1]).clip(0).mean()) / 255
        return np.array([red, 1 - red])

    saliency = occlusion_saliency(view, score, target=0)
    assert saliency.heatmap.shape == (160, 224) and saliency.overlay.shape == (160, 224, 3)
    peak_y, peak_x = np.unravel_index(np.argmax(saliency.heatmap), saliency.heatmap.shape)
    assert peak_y >= 80 and peak_x >= 150


@pytest.mark.parametrize("shape", [(160, 160), (144, 192)])
def test_the_heatmap_peaks_at_the_centre_of_the_patch_that_mattered(shape):
    """When hiding one patch, and only that one, lowers the score, the heatmap must peak at that patch's
    centre (the grid used to be stretched over the view, which put cells up to 10 px from their patches).
    Patches are found from the occluded images themselves, not from the code's own formula."""
    from edge.vision.saliency import occlusion_saliency

    height, width = shape
    view = np.random.default_rng(0).integers(40, 80, (height, width, 3), dtype=np.uint8)
    fill = view.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    unchanged = np.any(view != fill, axis=2)

    def patch_centre(image: np.ndarray) -> tuple[float, float]:
        ys, xs = np.nonzero(np.all(image == fill, axis=2) & unchanged)
        return (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2

    centres: list[tuple[float, float]] = []

    def record(image: np.ndarray) -> np.ndarray:  # a first pass only to learn where the patches go
        if not np.array_equal(image, view):
            centres.append(patch_centre(image))
        return np.array([0.5, 0.5])

    occlusion_saliency(view, record, target=0)
    rows, cols = sorted({c[0] for c in centres}), sorted({c[1] for c in centres})
    assert len(rows) == len(cols) == 8
    for i, j in ((1, 6), (6, 1), (3, 4), (5, 5)):  # inner patches: beyond the outer ones the map is held flat
        chosen = (rows[i], cols[j])

        def score(image: np.ndarray, chosen=chosen) -> np.ndarray:
            mattered = not np.array_equal(image, view) and patch_centre(image) == chosen
            return np.array([0.2, 0.8]) if mattered else np.array([0.9, 0.1])

        heatmap = occlusion_saliency(view, score, target=0).heatmap
        peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert abs(peak[0] - chosen[0]) <= 0.5 and abs(peak[1] - chosen[1]) <= 0.5, (shape, chosen, peak)
