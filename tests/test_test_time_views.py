"""Test-time augmentation: the views, how a pack asks for them, and that the device averages exactly those."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import HAM_IMAGES

from edge.config import InferenceSettings
from edge.errors import ModelError
from edge.inference import Classifier, load_pack
from edge.inference.classifier import tta_views
from edge.inference.decision import softmax
from edge.paths import default_model_dir
from edge.vision.decode import read_image_file


def test_views_are_the_eight_symmetries_of_the_square_flips_first():
    tensor = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)  # NHWC, no symmetry of its own
    views = tta_views(tensor, 8)
    assert len(views) == 8
    assert np.array_equal(views[0], tensor)
    assert np.array_equal(views[1], tensor[:, :, ::-1])  # mirrored left-right
    assert np.array_equal(views[2], tensor[:, ::-1])  # upside down
    assert np.array_equal(views[4], tensor.transpose(0, 2, 1, 3))
    assert np.array_equal(views[5], np.rot90(tensor, k=-1, axes=(1, 2)))  # a quarter turn is among them
    distinct = {view.tobytes() for view in views}
    assert len(distinct) == 8
    assert all(view.flags.c_contiguous for view in views)  # interpreters want contiguous input
    assert [v.tobytes() for v in tta_views(tensor, 4)] == [v.tobytes() for v in views[:4]]
    assert len(tta_views(tensor, 1)) == 1
    with pytest.raises(ValueError, match="1, 4 or 8"):
        tta_views(tensor, 3)


def test_views_of_a_device_input_equal_the_numpy_symmetries():
    """The device's case (one non-square int8 RGB image) gives exactly the numpy flips and transpose."""
    tensor = np.random.default_rng(0).integers(-128, 128, (1, 5, 7, 3)).astype(np.int8)
    transposed = tensor.transpose(0, 2, 1, 3)
    expected = [tensor, tensor[:, :, ::-1], tensor[:, ::-1], tensor[:, ::-1, ::-1]]
    expected += [transposed, transposed[:, :, ::-1], transposed[:, ::-1], transposed[:, ::-1, ::-1]]
    views = tta_views(tensor, 8)
    assert [(v.dtype, v.shape) for v in views] == [(e.dtype, e.shape) for e in expected]
    assert all(np.array_equal(v, e) for v, e in zip(views, expected))


def _pack_copy(tmp_path, **decision):
    pack = tmp_path / "pack"
    shutil.copytree(default_model_dir(), pack)
    manifest = json.loads((pack / "model.json").read_text())
    manifest["decision"].pop("test_time_views", None)
    manifest["decision"].pop("test_time_flips", None)
    manifest["decision"].update(decision)
    (pack / "model.json").write_text(json.dumps(manifest))
    return pack


def test_packs_that_say_test_time_flips_still_load(tmp_path):
    assert load_pack(_pack_copy(tmp_path, test_time_flips=True)).manifest.decision.test_time_views == 4
    shutil.rmtree(tmp_path / "pack")
    assert load_pack(_pack_copy(tmp_path, test_time_flips=False)).manifest.decision.test_time_views == 1


def test_bad_view_counts_and_non_square_inputs_are_refused(tmp_path):
    with pytest.raises(ModelError, match="test_time_views"):
        load_pack(_pack_copy(tmp_path, test_time_views=3))
    pack = _pack_copy(tmp_path / "b", test_time_views=8)
    manifest = json.loads((pack / "model.json").read_text())
    manifest["input"]["width"] = 200
    (pack / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="square input"):
        load_pack(pack)


def test_a_non_square_input_allows_one_or_four_views():
    from edge.inference.manifest import InputSpec, view_counts

    assert view_counts(InputSpec(width=160, height=160)) == (1, 4, 8)
    assert view_counts(InputSpec(width=192, height=144, crop="center")) == (1, 4)


@pytest.mark.parametrize("views", [1, 4, 8])
def test_classifier_averages_the_logits_of_exactly_the_packs_views(tmp_path, views):
    """The skin model on a real lesion: the device's probabilities are the softmax of the mean of the raw
    invokes over the pack's views, and its invoke time covers that many invokes."""
    pack = load_pack(_pack_copy(tmp_path, test_time_views=views))
    classifier = Classifier.open(pack, "cpu", InferenceSettings())
    try:
        image = read_image_file(sorted(HAM_IMAGES.glob("*.jpg"))[3])
        scores = classifier.scores(image)
        tensor = classifier.preprocess(image)
        raw = np.array([classifier.backend.invoke(view) for view in tta_views(tensor, 8)])
        expected = softmax(raw[:views].mean(axis=0), pack.manifest.decision.temperature)
        assert scores.probabilities == pytest.approx(expected, abs=1e-6)
        if views < 8:  # the views left out do change the answer, so the check above can fail
            assert not np.allclose(softmax(raw.mean(axis=0), pack.manifest.decision.temperature), expected,
                                   atol=1e-6)
    finally:
        classifier.close()
