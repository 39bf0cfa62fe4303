"""Classification metrics in plain numpy: what ISIC 2018 Task 3 reports, plus calibration.

``y`` are integer class indices, ``p`` are (n, k) probability rows, ``predicted`` the device's answers.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y, predicted), 1)
    return matrix


def balanced_accuracy(y: np.ndarray, predicted: np.ndarray, k: int) -> float:
    """Mean per-class recall over the classes present (the ISIC 2018 Task 3 metric)."""
    matrix = confusion_matrix(y, predicted, k)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney rank statistic (ties count half); NaN if one class."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(score)]))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every threshold, for plotting."""
    order = np.argsort(-score, kind="mergesort")
    hits = positive.astype(bool)[order]
    # One point per distinct threshold: tied scores (common with int8 outputs) move the curve diagonally
    # together, so the plotted area is the AUROC whatever the order of the tied rows.
    last_of_tie = np.flatnonzero(np.diff(score[order])) if len(score) else np.array([], dtype=int)
    ends = np.concatenate((last_of_tie, [len(score) - 1])) if len(score) else last_of_tie
    tpr = np.concatenate(([0.0], np.cumsum(hits)[ends] / max(hits.sum(), 1)))
    fpr = np.concatenate(([0.0], np.cumsum(~hits)[ends] / max((~hits).sum(), 1)))
    return fpr, tpr


def per_class(y: np.ndarray, p: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict[str, dict]:
    k = len(labels)
    matrix = confusion_matrix(y, predicted, k)
    report = {}
    for c, label in enumerate(labels):
        tp = matrix[c, c]
        fn = matrix[c].sum() - tp
        fp = matrix[:, c].sum() - tp
        tn = matrix.sum() - tp - fn - fp
        sensitivity = tp / (tp + fn) if tp + fn else float("nan")
        specificity = tn / (tn + fp) if tn + fp else float("nan")
        precision = tp / (tp + fp) if tp + fp else 0.0
        f1 = 2 * precision * sensitivity / (precision + sensitivity) if precision + sensitivity else 0.0
        report[label] = {"support": int(tp + fn), "sensitivity": float(sensitivity), "specificity": float(specificity),
                         "precision": float(precision), "f1": float(f1), "auroc": auroc(y == c, p[:, c])}
    return report


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 15) -> list[dict]:
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            rows.append({"low": float(low), "high": float(high), "count": int(in_bin.sum()),
                         "confidence": float(confidence[in_bin].mean()), "accuracy": float(correct[in_bin].mean())})
    return rows


def nll(y: np.ndarray, p: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_temperature(y: np.ndarray, logits: np.ndarray) -> float:
    """The temperature minimising validation NLL (golden-section search on log T in [0.05, 20])."""
    from edge.inference.decision import softmax

    def loss(log_t: float) -> float:
        return nll(y, softmax(logits, float(np.exp(log_t))))

    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    for _ in range(60):
        if loss(a) < loss(b):
            high = b
        else:
            low = a
        a, b = high - ratio * (high - low), low + ratio * (high - low)
    return float(np.exp((low + high) / 2))


def summarise(y: np.ndarray, p: np.ndarray, predicted: np.ndarray, labels: list[str], *, focus: str = "mel") -> dict:
    """Every headline number for one (model, preprocessing) variant."""
    k = len(labels)
    classes = per_class(y, p, predicted, labels)
    aurocs = [c["auroc"] for c in classes.values() if not np.isnan(c["auroc"])]
    summary = {
        "n": int(len(y)),
        "balanced_accuracy": balanced_accuracy(y, predicted, k),
        "accuracy": float(np.mean(predicted == y)),
        "macro_auroc": float(np.mean(aurocs)) if aurocs else float("nan"),
        "ece": expected_calibration_error(y, p),
        "nll": nll(y, p),
        "per_class": classes,
        "confusion_matrix": {"labels": labels, "rows_true_cols_predicted": confusion_matrix(y, predicted, k).tolist()},
    }
    if focus in labels:
        summary[f"{focus}_sensitivity"] = classes[focus]["sensitivity"]
        summary[f"{focus}_specificity"] = classes[focus]["specificity"]
    return summary
