"""The one interface every camera source implements, and the helpers they share.

The pipeline only ever sees ``CameraSource``: whether frames come from a CSI camera, a USB webcam, a
GStreamer pipeline or a folder of images is decided once, by ``open_source``/``probe_auto``. Every source
hands out RGB ``Frame`` values, so colour-order bugs (OpenCV and picamera2 both deliver BGR) are fixed
here, at the edge, and never leak downstream.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

from edge.errors import CameraUnavailable
from edge.types import Frame

log = logging.getLogger("edge.camera")


@dataclass(frozen=True)
class ProbeResult:
    """What auto-detection tried and why it did or did not work, so users see exactly what was probed."""

    spec: str
    ok: bool
    detail: str
    absent: bool = False  # nothing of the kind on this machine (no CSI camera, no /dev/video*), not a fault


class CameraSource(abc.ABC):
    """A camera that can be opened, read frame by frame, and always released.

    Subclasses implement ``_open``, ``_read_bgr`` and ``_close``; this base class owns the bookkeeping
    (open state, frame numbering, BGR->RGB) so each backend stays small and behaves the same way.
    """

    spec: str

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._is_open = False
        self._frames_read = 0

    # -- public verbs -------------------------------------------------------------------------------
    def open(self) -> None:
        """Acquire the device; raises ``CameraUnavailable`` with an actionable message.

        A failed open releases whatever was partially acquired, so a retry starts from a clean slate.
        """
        if self._is_open:
            return
        try:
            self._open()
        except BaseException:
            self._close()
            raise
        self._is_open = True
        self._frames_read = 0
        log.info("camera opened: %s", self.describe())

    def read(self) -> Frame:
        """Return the next RGB frame; raises ``CameraUnavailable`` when the device fails or disappears."""
        if not self._is_open:
            raise CameraUnavailable(f"camera {self.spec} is not open: call open() first")
        image = to_rgb(self._read_bgr())
        frame = Frame(image=image, source=self.spec, index=self._frames_read)
        self._frames_read += 1
        return frame

    def close(self) -> None:
        """Release the device. Safe to call any number of times, including after a failed open."""
        was_open = self._is_open
        self._is_open = False
        self._close()
        if was_open:
            log.info("camera closed: %s", self.spec)

    def describe(self) -> str:
        """One human line: what this source is."""
        return f"{type(self).__name__} {self.spec}"

    def __enter__(self) -> CameraSource:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} {'open' if self._is_open else 'closed'}>"

    # -- what a backend implements ---------------------------------------------------------------------
    @abc.abstractmethod
    def _open(self) -> None:
        """Acquire the device or raise ``CameraUnavailable``."""

    @abc.abstractmethod
    def _read_bgr(self) -> np.ndarray:
        """Return the next image in the backend's native order (BGR, BGRA or grey), or raise."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release everything; must be idempotent and must not raise."""


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Convert a BGR/BGRA/grey uint8 image to a contiguous HxWx3 RGB array (the ``Frame`` contract)."""
    if image is None or image.size == 0:
        raise CameraUnavailable("camera delivered an empty image")
    if image.dtype != np.uint8:
        raise CameraUnavailable(f"camera delivered {image.dtype} pixels; expected 8-bit images")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise CameraUnavailable(f"camera delivered {channels}-channel images; expected 3 (BGR)")
