"""Distillation targets from teacher packs, run through the shipped int8 model (no TensorFlow needed)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from conftest import HAM_IMAGES

from edge.errors import EdgeError
from edge.inference import load_pack
from edge.paths import default_model_dir
from edge.training.data import Sample, read_split
from edge.training.distill import check_teacher_split, teacher_probabilities, training_targets

PACK = default_model_dir()


def _split(name: str, n: int) -> list[Sample]:
    return read_split(PACK / "split.csv", HAM_IMAGES, name)[:n]


def test_targets_blend_the_label_with_the_teachers():
    labels = np.array([0, 2, 1])
    teacher = np.array([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4], [0.0, 1.0, 0.0]], np.float32)
    assert training_targets(labels, 3, None, 0.0).tolist() == np.eye(3)[labels].tolist()
    assert training_targets(labels, 3, teacher, 0.0).tolist() == np.eye(3)[labels].tolist()
    blended = training_targets(labels, 3, teacher, 0.25)
    assert np.allclose(blended, 0.75 * np.eye(3)[labels] + 0.25 * teacher)
    assert np.allclose(blended.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        training_targets(labels, 3, teacher, 1.5)
    with pytest.raises(ValueError, match="shape"):
        training_targets(labels, 3, teacher[:2], 0.5)


def test_teacher_probabilities_are_the_packs_own_calibrated_output():
    """The shipped pack as teacher: its probabilities are those the device shows, softened by the factor."""
    from edge.config import InferenceSettings
    from edge.inference.classifier import Classifier
    from edge.vision.decode import read_image_file

    pack = load_pack(PACK)
    labels = list(pack.manifest.labels)
    train = _split("train", 6)
    held_out = _split("val", 20) + _split("test", 20)
    p, provenance = teacher_probabilities([PACK], train, labels, held_out)
    assert p.shape == (6, len(labels)) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert provenance[0]["version"] == pack.manifest.version and len(provenance[0]["model_sha256"]) == 64
    classifier = Classifier.open(pack, "cpu", InferenceSettings(cpu={"threads": 2}))
    try:
        shown = classifier.scores(read_image_file(train[0].path))
    finally:
        classifier.close()
    assert np.allclose(p[0], shown.probabilities, atol=1e-4)
    softer, _ = teacher_probabilities([PACK], train, labels, held_out, temperature_factor=2.0)
    assert np.all(softer.max(axis=1) < p.max(axis=1))  # a higher temperature spreads every prediction


def test_a_teacher_that_trained_on_held_out_images_is_refused(tmp_path):
    copy = tmp_path / "teacher"
    shutil.copytree(PACK, copy)
    val = _split("val", 3)
    with open(copy / "split.csv", "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow([val[1].path.name, val[1].label, val[1].group, "train"])
    check_teacher_split(PACK, val)  # the shipped pack never trained on its own val images
    with pytest.raises(EdgeError, match="trained on 1 images this run holds out"):
        check_teacher_split(copy, val)
    (copy / "split.csv").unlink()
    with pytest.raises(EdgeError, match="no split.csv"):
        check_teacher_split(copy, val)


def test_a_teacher_with_other_labels_is_refused():
    labels = list(load_pack(PACK).manifest.labels)
    with pytest.raises(EdgeError, match="has labels"):
        teacher_probabilities([PACK], _split("train", 2), labels[::-1], [])
