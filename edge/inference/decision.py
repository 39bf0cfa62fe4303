"""From model outputs to an answer: temperature-scaled probabilities, the operating point, abstention.

Pure functions of arrays and the pack's ``DecisionSpec``, so evaluation scores exactly what the device shows.
Order of the rules, safety first:

1. out of distribution (the logits are unlike anything seen in training) -> abstain, "unsure";
2. a priority label (melanoma, then BCC) at or above its threshold -> that label, even if not the argmax;
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
    for rule in spec.priority:
        index = labels.index(rule.label)
        if probabilities[index] >= rule.min_probability:
            return Decision(index, False, None)
    if probabilities[top] < spec.abstain_below:
        return Decision(top, True, LOW_CONFIDENCE)
    return Decision(top, False, None)


def decide_batch(probabilities: np.ndarray, logits: np.ndarray | None, spec: DecisionSpec,
                 labels: tuple[str, ...]) -> list[Decision]:
    return [decide(p, None if logits is None else l, spec, labels)
            for p, l in zip(probabilities, logits if logits is not None else [None] * len(probabilities))]
