"""From model outputs to an answer: temperature-scaled probabilities, the operating point, abstention.

Pure functions of arrays and the pack's ``DecisionSpec``, so evaluation scores exactly what the device shows.
Order of the rules, safety first:

1. out of distribution (the logits are unlike anything seen in training) -> abstain, "unsure";
2. the operating point, which favours the urgent labels (melanoma, BCC):
   - ``label_weights`` (packs from 1.2.1): the label with the largest weight x probability; when that is a
     weighted label it is the answer, even if it is not the argmax. This is the Bayes decision when missing
     a melanoma costs ``w`` false alarms; it compares melanoma with the likeliest alternative, so a lesion
     that is clearly a benign keratosis is not called melanoma just because p(mel) passed a fixed bar;
   - ``priority`` (older packs): a label at or above its threshold, melanoma first, regardless of the rest;
3. the top calibrated probability below ``abstain_below`` -> abstain, "unsure" (the argmax is still shown);
4. otherwise the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.inference.manifest import DecisionSpec

LOW_CONFIDENCE = "low_confidence"
OUT_OF_DISTRIBUTION = "out_of_distribution"


@dataclass(frozen=True)
class Decision:
    index: int
    abstained: bool
    reason: str | None


def logsumexp(logits: np.ndarray) -> np.ndarray:
    peak = logits.max(axis=-1, keepdims=True)
    return (peak + np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True)))[..., 0]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    shifted = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def decide(probabilities: np.ndarray, logits: np.ndarray | None, spec: DecisionSpec, labels: tuple[str, ...]) -> Decision:
    top = int(np.argmax(probabilities))
    if logits is not None and spec.ood_min_logsumexp is not None and float(logsumexp(logits)) < spec.ood_min_logsumexp:
        return Decision(top, True, OUT_OF_DISTRIBUTION)
    decided, picked = _operating_point(probabilities[None], spec, labels)
    if picked[0]:
        return Decision(int(decided[0]), False, None)
    if probabilities[top] < spec.abstain_below:
        return Decision(top, True, LOW_CONFIDENCE)
    return Decision(top, False, None)


def decide_batch(probabilities: np.ndarray, logits: np.ndarray | None, spec: DecisionSpec,
                 labels: tuple[str, ...]) -> list[Decision]:
    return [decide(p, None if logits is None else l, spec, labels)
            for p, l in zip(probabilities, logits if logits is not None else [None] * len(probabilities))]


def decide_indices(probabilities: np.ndarray, spec: DecisionSpec, labels: tuple[str, ...]) -> np.ndarray:
    """The labels ``decide`` picks, without logits (so no out-of-distribution check), for a whole (n, k) array
    at once: for fitting the operating point on val, where ``decide`` row by row is too slow.
    Equal to ``[d.index for d in decide_batch(probabilities, None, spec, labels)]``."""
    return _operating_point(probabilities, spec, labels)[0]


def _operating_point(probabilities: np.ndarray, spec: DecisionSpec,
                     labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Rule 2 for each row of (n, k) calibrated probabilities: the label it picks (the argmax where it picks
    none), and whether it picked one (a picked urgent label is never turned into an abstention)."""
    decided = probabilities.argmax(axis=1)
    picked = np.zeros(len(probabilities), bool)
    if spec.label_weights:
        weights = np.array([spec.label_weights.get(label, 1.0) for label in labels])
        weighted = (probabilities * weights).argmax(axis=1)
        picked = weights[weighted] > 1.0
        decided[picked] = weighted[picked]
    for rule in spec.priority:  # a spec has label_weights or priority rules, never both
        index = labels.index(rule.label)
        hit = ~picked & (probabilities[:, index] >= rule.min_probability)
        decided[hit] = index
        picked |= hit
    return decided, picked
