"""The shared vocabulary: one typed value per boundary.

Every stage of the one-way flow (camera -> vision -> inference -> consumers) hands one of these values to
the next. They are immutable and carry no behaviour beyond what is needed to read and serialise them.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One RGB image from a camera source or an upload: ``image`` is HxWx3 uint8."""

    image: np.ndarray
    source: str
    index: int = 0
    timestamp: float = field(default_factory=time.time)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


class QualityIssue(str, enum.Enum):
    """Why a capture is unusable, each with advice a patient or health worker can act on."""

    BLUR = "blur"
    UNDEREXPOSED = "underexposed"
    OVEREXPOSED = "overexposed"
    NOT_SKIN = "not_skin"

    @property
    def advice(self) -> str:
        return _ADVICE[self]


_ADVICE = {
    QualityIssue.BLUR: "Image is blurred: hold still and keep the camera at the focus distance.",
    QualityIssue.UNDEREXPOSED: "Image is too dark: add more light.",
    QualityIssue.OVEREXPOSED: "Image is too bright: reduce glare or move out of direct light.",
    QualityIssue.NOT_SKIN: "No skin in view: centre the skin area in the frame.",
}


@dataclass(frozen=True)
class Quality:
    """The quality gate's verdict on a frame, with the measurements that led to it."""

    issues: tuple[QualityIssue, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def reasons(self) -> list[str]:
        return [issue.advice for issue in self.issues]

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "issues": [issue.value for issue in self.issues],
            "reasons": self.reasons,
            "metrics": {k: round(v, 4) for k, v in self.metrics.items()},
        }


class Urgency(str, enum.Enum):
    """Triage tier shown to the user; ordered from most to least pressing."""

    URGENT = "urgent"
    SOON = "soon"
    ROUTINE = "routine"
    UNSURE = "unsure"


@dataclass(frozen=True)
class ModelInfo:
    """Identifies exactly which model produced a result."""

    name: str
    version: str
    sha256: str

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class Result:
    """One classification: what every consumer (CLI, kiosk, store, MQTT) receives."""

    label: str
    display_name: str
    confidence: float
    probabilities: dict[str, float]
    urgency: Urgency
    quality: Quality
    model: ModelInfo
    backend: str
    latency_ms: float
    abstained: bool = False
    abstain_reason: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: float = field(default_factory=time.time)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: kv[1], reverse=True)[:k]

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "label": self.label,
            "display_name": self.display_name,
            "confidence": round(self.confidence, 6),
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "urgency": self.urgency.value,
            "abstained": self.abstained,
            "abstain_reason": self.abstain_reason,
            "quality": self.quality.to_json(),
            "latency_ms": round(self.latency_ms, 3),
            "model": self.model.to_json(),
            "backend": self.backend,
            "timestamp": self.timestamp,
        }
