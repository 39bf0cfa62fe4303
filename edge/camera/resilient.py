"""Keep a camera running across unplugs, driver hiccups and vanished replay folders.

A field device cannot ask someone to restart the daemon when a USB cable wiggles. ``ResilientSource``
turns every ``CameraUnavailable`` into "no frame right now" (``None``), closes the broken source and
reopens a fresh one with exponential backoff (like paho-mqtt's reconnect), so the pipeline loop stays
simple and the kiosk can show "camera down" from ``state``/``last_error``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from types import TracebackType

from edge.camera.base import CameraSource
from edge.errors import CameraUnavailable, SourceFinished
from edge.types import Frame

log = logging.getLogger("edge.camera")

MAX_WAIT_S = 0.1  # the longest read() waits while the camera is down, so callers can still shut down
CLOSE_WAIT_S = 1.0  # close() waits this long for a read in progress, then closes the device under it
JITTER = 0.1  # +-10% so a fleet of devices does not retry a shared resource in lock-step

STATE_OK = "ok"
STATE_DOWN = "down"
STATE_FINISHED = "finished"  # a replay without looping reached its end: never reopened
STATE_STALLED = "stalled"  # reported by the pipeline: says ok, but no frame for a while (edge.pipeline)


class ResilientSource:
    """A camera that never raises ``CameraUnavailable``: ``read()`` returns a frame or ``None``.

    ``factory`` builds a fresh, unopened ``CameraSource`` (e.g. ``lambda: open_source(spec)``); a new one
    is built for every reopen so no state from the failed device survives. Frames are renumbered so
    ``Frame.index`` keeps increasing across reopens.
    """

    def __init__(
        self,
        factory: Callable[[], CameraSource],
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self._factory = factory
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._source: CameraSource | None = None
        self._backoff = backoff_initial
        self._next_attempt = clock()
        self._had_failure = False
        self._closed = False
        self._delivered = 0
        self.spec = "unknown"
        self.state = STATE_DOWN
        self.last_error: str | None = None
        self.reopen_attempts = 0
        self.first_index = 0  # index of the first frame the current device delivers (frames before are older)
        self.tried = threading.Event()  # set once the first open has been attempted: state means something

    def describe(self) -> str:
        detail = f": {self.last_error}" if self.state == STATE_DOWN and self.last_error else ""
        return f"{self.spec} ({self.state}{detail})"

    def read(self) -> Frame | None:
        """The next frame, or ``None`` while the camera is down (waiting at most ``MAX_WAIT_S``)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("ResilientSource is closed: use it as a context manager or create a new one")
            if self._source is None and not self._reopen_when_due():
                return None
            assert self._source is not None
            try:
                frame = self._source.read()
            except SourceFinished as exc:  # a replay without looping: done for good, not down
                self._finished(exc)
                return None
            # a driver or decoder error (cv2.error, OSError) is the camera going down too
            except Exception as exc:  # noqa: BLE001
                self._went_down(exc)
                return None
            if self._had_failure:
                self._recovered()
            frame = dataclasses.replace(frame, index=self._delivered)
            self._delivered += 1
            return frame

    def close(self) -> None:
        """Release the camera; ``read()`` after this is a bug, re-entering the context manager reopens.
        A read blocked inside a driver (a GStreamer or libcamera pipeline that stopped delivering) holds the
        lock: after ``CLOSE_WAIT_S`` the device is closed under it, which is what makes such a read return,
        so shutting down never hangs on the camera."""
        locked = self._lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            if not locked:
                log.warning("camera %s: a read is stuck; closing the device under it", self.spec)
            self._closed = True
            self._release()
            self.state = STATE_DOWN
        finally:
            if locked:
                self._lock.release()

    def __enter__(self) -> ResilientSource:
        with self._lock:
            self._closed = False
            self._next_attempt = self._clock()
            self._reopen_when_due()  # open now so state is meaningful before the first read
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------------
    def _reopen_when_due(self) -> bool:
        """Open a fresh source if the backoff has elapsed; otherwise wait a little. True when open."""
        remaining = self._next_attempt - self._clock()
        if remaining > 0:
            self._sleep(min(remaining, MAX_WAIT_S))
            return False
        if self._had_failure:
            self.reopen_attempts += 1
        try:
            source = self._factory()
            self.spec = source.spec
            source.open()
        # whatever stops a camera from opening is retried with backoff, never fatal
        except Exception as exc:  # noqa: BLE001
            self._went_down(exc)
            self.tried.set()
            return False
        self._source = source
        self.first_index = self._delivered
        self._came_up()
        self.tried.set()
        return True

    def _came_up(self) -> None:
        """Opened. The backoff is reset only once a frame arrives (``_recovered``): a device that opens but
        never delivers must not be reopened every half second forever."""
        self.state = STATE_OK
        self.last_error = None

    def _recovered(self) -> None:
        log.info("camera back: %s after %d reopen attempts", self.spec, self.reopen_attempts)
        self.reopen_attempts = 0
        self._backoff = self._backoff_initial
        self._had_failure = False

    def _finished(self, exc: SourceFinished) -> None:
        self._release()
        self._next_attempt = float("inf")
        self.state = STATE_FINISHED
        self.last_error = str(exc)
        log.warning("camera source finished: %s; uploads are still accepted", exc)

    def _went_down(self, exc: Exception) -> None:
        self._release()
        delay = self._backoff * random.uniform(1 - JITTER, 1 + JITTER)
        self._next_attempt = self._clock() + delay
        self._backoff = min(self._backoff * 2, self._backoff_max)
        self._had_failure = True
        self.state = STATE_DOWN
        self.last_error = str(exc) if isinstance(exc, CameraUnavailable) else f"{type(exc).__name__}: {exc}"
        log.warning("camera down: %s: %s; reopening in %.1f s", self.spec, self.last_error, delay,
                    exc_info=not isinstance(exc, CameraUnavailable))  # an unexpected error keeps its traceback

    def _release(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.close()
