"""What the kiosk needs from the rest of the device, as one protocol.

The kiosk never imports camera or inference code: the daemon hands it an object satisfying ``Screening``
(``edge.pipeline.PipelineScreening``), and tests can hand it the same real object built on a replay camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge.errors import EdgeError
from edge.types import Quality, Result


class RetakeNeeded(EdgeError):
    """The capture is unusable; ``quality`` says why and what to do."""

    def __init__(self, quality: Quality) -> None:
        super().__init__("; ".join(quality.reasons) or "the image cannot be used")
        self.quality = quality


class NotFound(EdgeError):
    """An unknown (or already forgotten) result id."""


@dataclass(frozen=True)
class Preview:
    jpeg: bytes
    quality: Quality | None
    index: int
    timestamp: float


class Screening(Protocol):
    def preview(self) -> Preview | None:
        """The latest camera frame as JPEG with its quality verdict; None without a camera."""

    def capture(self) -> Result:
        """Classify the current camera frame; ``RetakeNeeded`` if unusable."""

    def classify_upload(self, data: bytes) -> Result:
        """Classify uploaded image bytes; ``ImageError`` if unreadable, ``RetakeNeeded`` if unusable."""

    def saliency_png(self, result_id: str) -> bytes:
        """The saliency overlay of a result still held in memory; ``NotFound`` otherwise."""

    def forget(self, result_ids: list[str]) -> None:
        """Drop everything held for these results (images, overlays): a new patient."""

    def health(self) -> dict: ...

    def stats(self) -> dict: ...
