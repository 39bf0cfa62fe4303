"""The lesion-grouped, stratified split on the real HAM10000 metadata (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED
from edge.training.data import read_csv_dataset, read_folder_dataset, read_split, split_by_group, write_split

HAM = SHARED / "data" / "ham10000"


@pytest.fixture(scope="module")
def samples():
    return read_csv_dataset(HAM / "HAM10000_metadata.csv", HAM / "images")


def test_no_lesion_straddles_two_splits(samples):
    split = split_by_group(samples, seed=1234)
    groups = {name: {s.group for s in part} for name, part in split.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert sum(len(part) for part in split.values()) == len(samples) == 10015


def test_every_class_is_stratified_across_splits(samples):
    split = split_by_group(samples, seed=1234)
    for label in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"):
        lesions = {name: len({s.group for s in part if s.label == label}) for name, part in split.items()}
        total = sum(lesions.values())
        assert lesions["test"] / total == pytest.approx(0.15, abs=0.02), label
        assert lesions["val"] / total == pytest.approx(0.15, abs=0.02), label


def test_split_is_reproducible_and_round_trips(samples, tmp_path):
    first, second = split_by_group(samples, seed=7), split_by_group(samples, seed=7)
    assert [s.path for s in first["test"]] == [s.path for s in second["test"]]
    assert [s.path for s in split_by_group(samples, seed=8)["test"]] != [s.path for s in first["test"]]
    write_split(first, tmp_path / "split.csv")
    assert read_split(tmp_path / "split.csv", HAM / "images", "val") == first["val"]


def test_folder_dataset_for_other_packs(tmp_path, ham_images):
    for label in ("clear", "mild"):
        (tmp_path / label).mkdir()
        for path in ham_images[:3]:
            (tmp_path / label / f"{label}-{path.name}").write_bytes(path.read_bytes())
    samples = read_folder_dataset(tmp_path)
    assert sorted({s.label for s in samples}) == ["clear", "mild"] and len(samples) == 6
    assert len({s.group for s in samples}) == 6


def test_missing_images_are_reported(tmp_path):
    (tmp_path / "meta.csv").write_text("lesion_id,image_id,dx\nL1,absent,nv\n")
    with pytest.raises(FileNotFoundError, match="1 images listed"):
        read_csv_dataset(tmp_path / "meta.csv", tmp_path)


def test_sampling_plan_balances_classes_in_expectation():
    pytest.importorskip("cv2")
    from edge.training.train import sampling_plan

    y = np.array([0] * 900 + [1] * 100)
    probability, weights = sampling_plan(y, 2)
    share = np.array([probability[y == c].sum() for c in (0, 1)])
    effective = share * weights
    assert effective[0] == pytest.approx(effective[1])  # sampling x loss weight: balanced
    assert share[1] == pytest.approx(0.25)  # sqrt(100) / (sqrt(900) + sqrt(100)): far less repetition
