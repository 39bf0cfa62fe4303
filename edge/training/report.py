"""Plots committed with a model pack: confusion matrix, ROC curves, reliability diagram, training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.evaluation.metrics import auroc, confusion_matrix, reliability, roc_curve
from edge.evaluation.run import Outputs
from edge.inference.decision import decide_batch


def _pyplot():  # matplotlib is a training-only dependency, imported when plotting
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_training_curves(out: Path, history: list[dict]) -> None:
    _training(_pyplot(), out / "training_curves.png", history)


def write_test_plots(out: Path, int8: tuple[np.ndarray, Outputs], pack) -> None:
    plt = _pyplot()

    y, outputs = int8
    labels = list(pack.manifest.labels)
    spec = pack.manifest.decision
    views = spec.test_time_views  # plot what the device ships
    p = outputs.probabilities(views, spec.temperature)
    decided = np.array([d.index for d in decide_batch(p, outputs.logits(views), spec, pack.manifest.labels)])
    _confusion(plt, out / "confusion_matrix.png", confusion_matrix(y, decided, len(labels)), labels)
    _roc(plt, out / "roc_curves.png", y, p, labels)
    _reliability(plt, out / "reliability_diagram.png", y, outputs.probabilities(views, 1.0), p, spec.temperature)


def _confusion(plt, path, matrix, labels):
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{matrix[i, j]}\n{normalised[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("device answer (int8, operating point)")
    ax.set_ylabel("true diagnosis")
    ax.set_title("Confusion matrix, held-out test split")
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _roc(plt, path, y, p, labels):
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for c, label in enumerate(labels):
        fpr, tpr = roc_curve(y == c, p[:, c])
        ax.plot(fpr, tpr, label=f"{label} (AUC {auroc(y == c, p[:, c]):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("ROC curves, int8 model, held-out test split")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reliability(plt, path, y, before, after, temperature):
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for probabilities, name in ((before, "before scaling"), (after, f"after (T = {temperature:.2f})")):
        rows = reliability(y, probabilities)
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.set_xlabel("confidence (top calibrated probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram, held-out test split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _training(plt, path, history):
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    averaged = [h for h in history if h["phase"] == "average"]
    history = [h for h in history if h["phase"] != "average"]
    epochs = np.arange(1, len(history) + 1)
    left.plot(epochs, [h["loss"] for h in history], marker="o")
    left.set_title("training loss (class-weighted)")
    right.plot(epochs, [h["val_balanced_accuracy"] for h in history], marker="o", color="tab:green")
    right.set_title("validation balanced accuracy")
    for h in averaged:
        right.axhline(h["val_balanced_accuracy"], color="tab:purple", linestyle="--",
                      label=f"mean weights of the last {h['epoch']} epochs" + (" (kept)" if h["kept"] else ""))
        right.legend(loc="lower right")
    warmup = sum(1 for h in history if h["phase"] == "warmup")
    for axis in (left, right):
        axis.axvline(warmup + 0.5, color="grey", linestyle=":")
        axis.set_xlabel("epoch (dotted: warm-up | full fine-tune)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
