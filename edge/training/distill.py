"""Knowledge distillation: train one model on the averaged predictions of several finished packs.

An average of several independently trained models (an ensemble) is reliably better than any one of them,
but a device pack holds one ``model.tflite`` of at most 4 MB and is invoked once per view. Distillation
(Hinton et al. 2015) moves most of the ensemble's gain into a single model of the same size: the student's
training target for each image becomes ``(1 - distill) * one-hot label + distill * teachers' probabilities``.
The teachers' probabilities say, image by image, which wrong classes are plausible (a nevus that looks like a
melanoma), which a one-hot label cannot.

Teachers are run through the device's own code (their int8 ``model.tflite``, their test-time views and
temperature), on each training image as the device crops it for them, once before training.

Teachers that trained on these very images are more confident on them than on unseen ones, and their
probabilities carry little beyond the labels. ``temperature_factor`` > 1 softens them; ``out_of_fold``
avoids the problem: teachers are trained with
``edge train --train-folds N --train-fold i`` (each leaving a different lesion-grouped fold of the train split
out) and each training image is labelled only by the teachers that never saw it.

A teacher must not have trained on any image the student holds out (val or test): its predictions would carry
those labels into the student and make val and test look better than they are. This is checked from the
teachers' ``split.csv`` and refused otherwise.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from edge.errors import EdgeError
from edge.training.data import Sample

log = logging.getLogger("edge.train")


def _trained_on(pack_root: Path) -> set[str]:
    split = pack_root / "split.csv"
    if not split.is_file():
        raise EdgeError(f"teacher {pack_root} has no split.csv: cannot check it never trained on held-out images")
    with open(split, newline="", encoding="utf-8") as handle:
        return {row["image"] for row in csv.DictReader(handle) if row["split"] == "train"}


def _split_keys(path: Path) -> set[str]:
    """How ``split.csv`` may name this image: its file name (HAM10000's one folder) or ``<label>/<file>`` (a
    folder dataset, where a file name alone can belong to two labels)."""
    return {path.name, f"{path.parent.name}/{path.name}"}


def check_teacher_split(pack_root: Path, held_out: list[Sample], trained_on: set[str] | None = None) -> None:
    """Refuse a teacher that trained on any held-out image (``trained_on``: its train images, if already read)."""
    held = set().union(*(_split_keys(s.path) for s in held_out)) if held_out else set()
    leaked = (_trained_on(pack_root) if trained_on is None else trained_on) & held
    if leaked:
        raise EdgeError(f"teacher {pack_root} trained on {len(leaked)} images this run holds out for val/test "
                         f"(e.g. {min(leaked)}): its predictions would leak their labels")


def teacher_probabilities(teacher_dirs: list[Path], samples: list[Sample], labels: list[str],
                          held_out: list[Sample], temperature_factor: float = 1.0,
                          out_of_fold: bool = False) -> tuple[np.ndarray, list[dict]]:
    """Mean over teachers of their calibrated probabilities on ``samples`` (n, k), and who the teachers were.

    ``out_of_fold``: each image's mean takes only the teachers that never trained on it (teachers trained
    with ``--train-folds``, each leaving a different fold out); an image every teacher trained on is an error.
    """
    from edge.evaluation.run import collect_outputs, load_images, open_variant
    from edge.inference.decision import softmax
    from edge.inference.manifest import load_pack, sha256_file

    if not teacher_dirs:
        raise EdgeError("distillation needs at least one teacher pack")
    if temperature_factor <= 0:
        raise EdgeError("the teachers' temperature factor must be positive")
    packs, trained = [], []
    for root in teacher_dirs:
        pack = load_pack(Path(root))
        if list(pack.manifest.labels) != list(labels):
            raise EdgeError(f"teacher {root} has labels {list(pack.manifest.labels)}, this run has {labels}")
        trained.append(_trained_on(pack.root))
        check_teacher_split(pack.root, held_out, trained[-1])
        packs.append(pack)
    images = load_images([s.path for s in samples])
    names = [s.path.name for s in samples]
    keys = [_split_keys(s.path) for s in samples]
    y = np.array([labels.index(s.label) for s in samples])
    if out_of_fold:
        use = np.array([[not (key & seen) for key in keys] for seen in trained])  # (teachers, images)
        if not use.any(axis=0).all():
            missing = names[int(np.argmin(use.any(axis=0)))]
            raise EdgeError(f"out-of-fold distillation: every teacher trained on {missing} (and maybe others); "
                            "train teachers that each leave a different fold out (--train-folds)")
    else:
        use = np.ones((len(packs), len(samples)), bool)
    total = np.zeros((len(samples), len(labels)), np.float64)
    provenance = []
    for t, pack in enumerate(packs):
        if not use[t].any():
            raise EdgeError(f"out-of-fold distillation: teacher {pack.root} trained on every training image")
        decision = pack.manifest.decision
        classifier = open_variant(pack, "int8")
        try:
            outputs = collect_outputs(classifier, images, decision.test_time_views)
        finally:
            classifier.close()
        p = softmax(outputs.logits(decision.test_time_views), decision.temperature * temperature_factor)
        right = p.argmax(1) == y
        accuracy = float(np.mean(right[use[t]]))
        log.info("teacher %s %s on %d training images it labels: accuracy %.3f, mean top probability %.3f",
                 pack.manifest.name, pack.manifest.version, int(use[t].sum()), accuracy,
                 float(p[use[t]].max(1).mean()))
        total += p * use[t][:, None]
        provenance.append({"name": pack.manifest.name, "version": pack.manifest.version,
                           "model_sha256": sha256_file(pack.root / pack.manifest.files["cpu"].path),
                           "train_accuracy": round(accuracy, 4), "images_used": int(use[t].sum())})
    return (total / use.sum(axis=0)[:, None]).astype(np.float32), provenance


def training_targets(labels_idx: np.ndarray, n_classes: int, teacher_p: np.ndarray | None,
                     distill: float) -> np.ndarray:
    """Per-image target distributions: the one-hot label, blended with the teachers' probabilities."""
    if not 0.0 <= distill <= 1.0:
        raise ValueError(f"distill must be between 0 and 1, not {distill}")
    onehot = np.eye(n_classes, dtype=np.float32)[labels_idx]
    if teacher_p is None or distill == 0.0:
        return onehot
    if teacher_p.shape != onehot.shape:
        raise ValueError(f"teacher probabilities have shape {teacher_p.shape}, expected {onehot.shape}")
    return ((1.0 - distill) * onehot + distill * teacher_p).astype(np.float32)
