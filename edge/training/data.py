"""Labelled image sets and the lesion-grouped, stratified train/val/test split.

A dataset is read from either a CSV (HAM10000's metadata, or any CSV with an image column, a label column and
optionally a group column) or a folder with one sub-folder per label. Splitting is by *group* (HAM10000's
``lesion_id``): images of one lesion never straddle train and test, otherwise test accuracy is inflated by
near-duplicates. Groups are split per label (stratified) with a fixed seed. No TensorFlow here.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val", "test")
log = logging.getLogger("edge.train")
UNUSED = "unused"  # training images a run leaves out (``hold_out_fold``): in split.csv, never trained on


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    group: str


def read_csv_dataset(csv_path: Path, images_dir: Path, *, image_column: str = "image_id",
                     label_column: str = "dx", group_column: str | None = "lesion_id") -> list[Sample]:
    """Rows of a CSV; an image value without a suffix gets ``.jpg`` (HAM10000 style)."""
    samples = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            name = row[image_column]
            path = images_dir / (name if Path(name).suffix else f"{name}.jpg")
            group = row[group_column] if group_column else name
            samples.append(Sample(path, row[label_column], group))
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images listed in {csv_path} are missing, e.g. {missing[0]}")
    return samples


def read_folder_dataset(root: Path) -> list[Sample]:
    """``root/<label>/*.jpg``: every image is its own group."""
    samples = [Sample(path, label_dir.name, f"{label_dir.name}/{path.stem}")
               for label_dir in sorted(p for p in root.iterdir() if p.is_dir())
               for path in sorted(label_dir.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not samples:
        raise FileNotFoundError(f"no images under {root}/<label>/")
    return samples


def _shuffled_groups_per_label(samples: list[Sample], rng: np.random.Generator):
    """Per label (in sorted order), its groups in a seeded random order: what stratified, group-wise splits
    deal from. A group's label is that of its first image."""
    group_label: dict[str, str] = {}
    for sample in samples:
        group_label.setdefault(sample.group, sample.label)
    for label in sorted(set(group_label.values())):
        groups = sorted(g for g, lab in group_label.items() if lab == label)
        rng.shuffle(groups)
        yield groups


def split_by_group(samples: list[Sample], *, val: float = 0.15, test: float = 0.15, seed: int = 0) -> dict[str, list[Sample]]:
    """Stratified split of groups per label; every image follows its group."""
    assignment: dict[str, str] = {}
    for groups in _shuffled_groups_per_label(samples, np.random.default_rng(seed)):
        n_test, n_val = round(len(groups) * test), round(len(groups) * val)
        if len(groups) >= 3:  # a small label still gets one group in val and test, or it would go unmeasured
            n_test, n_val = max(n_test, int(test > 0)), max(n_val, int(val > 0))
        elif val > 0 or test > 0:
            label = next(s.label for s in samples if s.group == groups[0])
            log.warning("label %r has only %d group(s): all in train, so val and test cannot measure it",
                        label, len(groups))
        for index, group in enumerate(groups):
            assignment[group] = "test" if index < n_test else "val" if index < n_test + n_val else "train"
    split: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for sample in samples:
        split[assignment[sample.group]].append(sample)
    return split


def hold_out_fold(split: dict[str, list[Sample]], folds: int, fold: int, seed: int) -> dict[str, list[Sample]]:
    """Leave fold ``fold`` of ``folds`` (lesion-grouped, stratified per label) out of the train split, as
    ``UNUSED``. Teachers trained on different folds can then label each training image without having seen
    it (out-of-fold distillation, ``distill.py``); val and test are untouched."""
    if not 0 <= fold < folds or folds < 2:
        raise ValueError(f"fold {fold} of {folds}: need folds >= 2 and 0 <= fold < folds")
    left_out: set[str] = set()
    for groups in _shuffled_groups_per_label(split["train"], np.random.default_rng(seed + 1)):
        left_out.update(g for i, g in enumerate(groups) if i % folds == fold)
    return {**split, "train": [s for s in split["train"] if s.group not in left_out],
            UNUSED: [s for s in split["train"] if s.group in left_out]}


def write_split(split: dict[str, list[Sample]], path: Path) -> None:
    """One row per image. ``image`` is its path relative to the folder all the images share: the file name
    for HAM10000 (one images folder), ``<label>/<file>`` for a folder dataset, where the same file name can
    appear under several labels. ``read_split`` with that folder gives the paths back."""
    samples = [sample for name in (*SPLITS, UNUSED) for sample in split.get(name, [])]
    root = Path(os.path.commonpath([str(s.path.parent) for s in samples])) if samples else Path()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "group", "split"])
        for name in (*SPLITS, UNUSED):
            for sample in split.get(name, []):
                writer.writerow([sample.path.relative_to(root).as_posix(), sample.label, sample.group, name])


def read_split(path: Path, images_dir: Path, which: str) -> list[Sample]:
    """The samples of one split recorded by ``write_split``, with paths under ``images_dir``."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [Sample(images_dir / row["image"], row["label"], row["group"])
                for row in csv.DictReader(handle) if row["split"] == which]


def class_counts(samples: list[Sample], labels: list[str]) -> np.ndarray:
    counts = np.zeros(len(labels), dtype=np.int64)
    index = {label: i for i, label in enumerate(labels)}
    for sample in samples:
        counts[index[sample.label]] += 1
    return counts
