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


def _teacher_copy(tmp_path, name: str, trained: set[str], temperature: float):
    """The shipped pack as a teacher that trained on exactly ``trained`` (by image name), with its own
    temperature so its probabilities can be told apart."""
    import json

    copy = tmp_path / name
    shutil.copytree(PACK, copy)
    with open(PACK / "split.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(copy / "split.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "group", "split"])
        writer.writeheader()
        for row in rows:
            if row["split"] == "train":
                row["split"] = "train" if row["image"] in trained else "unused"
            writer.writerow(row)
    manifest = json.loads((copy / "model.json").read_text())
    manifest["decision"]["temperature"] = temperature
    (copy / "model.json").write_text(json.dumps(manifest))
    return copy


def test_out_of_fold_targets_come_only_from_teachers_that_never_saw_the_image(tmp_path):
    labels = list(load_pack(PACK).manifest.labels)
    train = _split("train", 3)
    a = _teacher_copy(tmp_path, "a", {train[0].path.name}, 0.7)  # A trained on image 0
    b = _teacher_copy(tmp_path, "b", {train[1].path.name}, 1.6)  # B on image 1; neither on image 2
    held_out = _split("val", 10)
    p_a, _ = teacher_probabilities([a], train, labels, held_out)
    p_b, _ = teacher_probabilities([b], train, labels, held_out)
    p, provenance = teacher_probabilities([a, b], train, labels, held_out, out_of_fold=True)
    assert np.allclose(p[0], p_b[0], atol=1e-6) and np.allclose(p[1], p_a[1], atol=1e-6)
    assert np.allclose(p[2], (p_a[2] + p_b[2]) / 2, atol=1e-6)
    assert [t["images_used"] for t in provenance] == [2, 2]
    both = _teacher_copy(tmp_path, "both", {train[0].path.name}, 1.0)
    with pytest.raises(EdgeError, match="every teacher trained on"):
        teacher_probabilities([a, both], train, labels, held_out, out_of_fold=True)


def test_a_fold_of_train_is_left_out_and_the_folds_cover_it():
    from edge.training.data import UNUSED, hold_out_fold

    split = {name: read_split(PACK / "split.csv", HAM_IMAGES, name) for name in ("train", "val", "test")}
    kept = [hold_out_fold(split, 2, fold, seed=1234) for fold in (0, 1)]
    train_groups = {s.group for s in split["train"]}
    for one in kept:
        assert one["val"] == split["val"] and one["test"] == split["test"]
        assert not {s.group for s in one["train"]} & {s.group for s in one[UNUSED]}
        assert len(one["train"]) + len(one[UNUSED]) == len(split["train"])
        assert 0.4 < len(one[UNUSED]) / len(split["train"]) < 0.6
        assert {s.label for s in one[UNUSED]} == {s.label for s in split["train"]}  # stratified
    assert {s.group for s in kept[0][UNUSED]} | {s.group for s in kept[1][UNUSED]} == train_groups
    assert not {s.group for s in kept[0][UNUSED]} & {s.group for s in kept[1][UNUSED]}
    with pytest.raises(ValueError, match="fold 2 of 2"):
        hold_out_fold(split, 2, 2, seed=1)


def test_split_csv_records_the_images_left_out(tmp_path):
    from edge.training.data import UNUSED, hold_out_fold, write_split

    split = {name: read_split(PACK / "split.csv", HAM_IMAGES, name) for name in ("train", "val", "test")}
    one = hold_out_fold(split, 3, 1, seed=7)
    write_split(one, tmp_path / "split.csv")
    for name in ("train", "val", "test", UNUSED):
        assert read_split(tmp_path / "split.csv", HAM_IMAGES, name) == one[name]
