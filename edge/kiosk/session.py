"""The kiosk's one patient session: results, ticked symptoms and chat, in memory only.

A kiosk serves one person at a time. "New patient" or an idle timeout clears everything, and the screening
side is told to forget the images it held for those results. Nothing here is ever written to disk.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from edge.kiosk.ports import NotFound
from edge.types import Result


EXPIRY_THREAD = "kiosk-session-expiry"


@dataclass
class PatientSession:
    results: dict[str, Result] = field(default_factory=dict)
    symptoms: dict[str, frozenset[str]] = field(default_factory=dict)
    chat: list[dict] = field(default_factory=list)
    red_flag_messages: list[str] = field(default_factory=list)
    overviews: dict[tuple[str, str], str] = field(default_factory=dict)  # (result id, language) -> LLM text
    started: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)


class SessionKeeper:
    """The current patient session. A session holding results expires ``idle_timeout_s`` after its last
    activity: on the next request, or by a timer when no request comes at all (the kiosk browser crashed,
    a remote tab was closed), so a walked-away patient's results never wait for the next visitor."""

    def __init__(self, idle_timeout_s: float, on_clear: Callable[[list[str]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._on_clear = on_clear
        self._clock = clock
        self._lock = threading.Lock()
        self._session = PatientSession(started=clock(), last_activity=clock())
        self._timer: threading.Timer | None = None
        self._closed = False  # after close() no timer is armed again, not even by one already running
        self.cleared = 0

    def touch(self) -> PatientSession:
        """The current session, after expiring it if it has been idle too long."""
        with self._lock:
            now = self._clock()
            if self._session.results and now - self._session.last_activity > self.idle_timeout_s:
                self._clear_locked()
            self._session.last_activity = now
            return self._session

    def expire_if_idle(self) -> bool:
        with self._lock:
            if self._session.results and self._clock() - self._session.last_activity > self.idle_timeout_s:
                self._clear_locked()
                return True
            return False

    def new_patient(self) -> None:
        with self._lock:
            self._clear_locked()

    def _clear_locked(self) -> None:
        ids = list(self._session.results)
        self._session = PatientSession(started=self._clock(), last_activity=self._clock())
        self.cleared += 1
        self._on_clear(ids)

    def add(self, result: Result, started_in: PatientSession | None = None) -> bool:
        """Put ``result`` in the current session. With ``started_in`` (the session its request began in, from
        ``touch``), a result whose session was cleared meanwhile (New patient, a page load, expiry) is not
        added to the next person's: False."""
        self.touch()
        with self._lock:
            if started_in is not None and started_in is not self._session:
                return False
            self._session.results[result.id] = result
            self._arm_locked()
            return True

    def while_current(self, session: PatientSession, action: Callable[[], None]) -> bool:
        """Run ``action`` (something quick: it holds the session lock) only if ``session`` is still the current
        one, ordered against a clear: what it queues cannot land after the wipe that a clear queues."""
        with self._lock:
            if session is not self._session:
                return False
            action()
            return True

    def _arm_locked(self) -> None:
        """Schedule an expiry check for when the session would time out (one timer at a time)."""
        if self._closed or self._timer is not None or not self._session.results:
            return
        remaining = self._session.last_activity + self.idle_timeout_s - self._clock()
        self._timer = threading.Timer(min(max(remaining, 0.0), self.idle_timeout_s) + 0.05, self._on_timer)
        self._timer.name, self._timer.daemon = EXPIRY_THREAD, True
        self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
        if not self.expire_if_idle():
            with self._lock:  # there was activity since: check again when the new idle period ends
                self._arm_locked()

    def close(self) -> None:
        """Stop the expiry timer (the app is shutting down)."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def result(self, result_id: str) -> Result:
        session = self.touch()
        try:
            return session.results[result_id]
        except KeyError:
            raise NotFound(f"unknown result id {result_id!r} (a new patient session clears results)") from None
