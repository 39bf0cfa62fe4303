"""Running under systemd: readiness, status and watchdog notifications, and logs to the journal.

``edge.service`` (``Type=notify``, ``WatchdogSec=``) relies on three messages from the daemon:

* ``READY=1`` once the device is usable: the kiosk answers HTTP, the model is loaded (or deliberately
  off, with the reason), and the camera delivered a frame (or there is deliberately no camera, or it
  stayed silent for ``CAMERA_WAIT_S``: then the device is ready *degraded*, uploads only, because a
  restart loop would take the kiosk away too). ``edge-kiosk.service`` starts after it.
* ``STATUS=…`` saying what the daemon is doing (``systemctl status edge`` shows it).
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, but only while the pipeline really works (``liveness``): the
  loop turns, no inference hangs, and frames arrive. A camera or inference loop that gets stuck stops
  the pings and systemd kills and restarts the daemon. A camera that has not delivered a single frame
  since this process started is treated like "no camera" (the loop turning is enough), so a camera that
  is gone for good costs one restart, not a restart loop that ends in the start limit.

Everything here is optional: without ``NOTIFY_SOCKET`` every notification is a no-op and no thread
starts. systemd-python (the ``systemd`` extra) is imported lazily; when it is missing a few lines of
socket code speak the same datagram protocol. Only the standard library is imported at module level.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from edge.camera.resilient import STATE_FINISHED, STATE_OK

if TYPE_CHECKING:  # pragma: no cover
    from edge.pipeline import Pipeline

log = logging.getLogger("edge.service")

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
KIOSK_WAIT_S = 30.0  # the kiosk not answering by then is logged as an error (READY waits on)
CAMERA_WAIT_S = 20.0  # READY without a first frame after this: degraded, uploads only
STATUS_INTERVAL_S = 5.0  # how often STATUS is refreshed when systemd asked for no watchdog
MIN_STALL_FRAMES = 10  # never call the camera stalled before this many frame periods without a frame
LOOP_STALL_MIN_S = 5.0  # the loop turns every 0.5 s even with no camera; this long without a turn is a hang
INFERENCE_STUCK_S = 60.0  # one inference (or saliency map) running longer than this is a hang
MAX_STATUS_CHARS = 400


# --- sd_notify ---------------------------------------------------------------------------------------------

def _systemd_daemon():
    """systemd-python's ``systemd.daemon``, or None when the ``systemd`` extra is not installed."""
    try:
        from systemd import daemon
    except ImportError:
        return None
    return daemon


def send_datagram(address: str, payload: bytes) -> None:
    """The notify protocol without libsystemd: one datagram on an AF_UNIX socket (``@name`` is abstract)."""
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        raise OSError(f"unsupported NOTIFY_SOCKET address {address!r} (expected a path or @name)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(payload, target)


class Notifier:
    """``sd_notify``: KEY=VALUE lines to ``$NOTIFY_SOCKET``; a no-op when it is not set.

    Prefers systemd-python's ``daemon.notify`` (libsystemd), which reads the socket address from this
    process's environment; the socket fallback is used when the module is missing or when ``address`` is
    not the process's own (tests). A failed send is logged at debug level and never raised: losing a
    notification must not stop screening.
    """

    def __init__(self, address: str | None, *, use_library: bool = True) -> None:
        self.address = address or None
        library = _systemd_daemon() if (self.address and use_library) else None
        if library is not None and os.environ.get("NOTIFY_SOCKET") != self.address:
            library = None
        self._library = library
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def via(self) -> str:
        if not self.enabled:
            return "off"
        return "systemd-python" if self._library is not None else "socket"

    def notify(self, **fields: str | int) -> bool:
        """Send ``READY=1``-style fields in one message (``notify(READY=1, STATUS="…")``). True if sent."""
        if not self.enabled or not fields:
            return False
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        with self._lock:
            try:
                if self._library is not None:
                    return bool(self._library.notify(message))
                send_datagram(self.address, message.encode("utf-8"))
                return True
            except OSError as exc:
                log.debug("sd_notify to %s failed: %s", self.address, exc)
                return False


def _one_line(value: str | int) -> str:
    text = " ".join(str(value).split())  # a newline would start another field
    return text if len(text) <= MAX_STATUS_CHARS else text[:MAX_STATUS_CHARS - 1] + "…"


def watchdog_period_s(environ: Mapping[str, str] | None = None) -> float | None:
    """``WatchdogSec=`` in seconds when systemd asked *this* process for pings (like ``sd_watchdog_enabled``)."""
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


# --- is the pipeline really working? ---------------------------------------------------------------------

@dataclass(frozen=True)
class Liveness:
    alive: bool
    reason: str


def stall_limit_s(watchdog_s: float | None, fps: float) -> float:
    """How long without a camera frame counts as stalled: half the watchdog timeout (one ping period), and
    never less than ``MIN_STALL_FRAMES`` frame periods, so a slow camera is not mistaken for a dead one."""
    base = watchdog_s / 2 if watchdog_s else STATUS_INTERVAL_S
    return max(base, MIN_STALL_FRAMES / fps)


def liveness(pipeline: "Pipeline", now: float, stall_s: float) -> Liveness:
    """Whether the pipeline is doing its job right now; the reason, in words, either way."""
    loop_stall_s = max(stall_s, LOOP_STALL_MIN_S)
    busy_since = pipeline.inference_started_at
    if busy_since is not None and now - busy_since > INFERENCE_STUCK_S:
        return Liveness(False, f"an inference has been running for more than {INFERENCE_STUCK_S:g} s")
    turned = pipeline.last_turn_at
    if turned is None or now - turned > loop_stall_s:
        if turned is not None and pipeline.last_frame_at is None and pipeline.camera_call_since is not None:
            # The camera's very first open or read has not returned (a wedged driver): a restart cannot
            # fix that, and the watchdog would only repeat it until systemd gave up, uploads and all.
            return Liveness(True, "the camera has not returned its first frame: uploads only")
        return Liveness(False, f"the pipeline loop has not turned for more than {loop_stall_s:.1f} s")
    if pipeline.camera is None:
        return Liveness(True, "no camera: the loop is alive")
    if pipeline.camera.state == STATE_FINISHED:  # a replay without looping ended: no frames are expected
        return Liveness(True, "the camera source has finished: the loop is alive")
    if pipeline.last_frame_at is None:
        return Liveness(True, "the camera has not delivered a frame since start: the loop is alive")
    if now - pipeline.last_frame_at > stall_s:
        return Liveness(False, f"no camera frame for more than {stall_s:.1f} s")
    return Liveness(True, "frames flowing")


def describe(pipeline: "Pipeline", kiosk_url: str | None) -> tuple[bool, str]:
    """(everything fine, one line about camera, model and kiosk) for ``STATUS=``."""
    parts, fine = [], True
    camera = pipeline.camera
    if camera is None:
        parts.append("no camera (uploads only)")
    elif camera.state == STATE_OK and pipeline.last_frame_at is None:
        fine = False
        parts.append(f"camera {camera.spec} opened but has sent no frame, uploads only")
    elif camera.state == STATE_OK:
        parts.append(f"camera {camera.spec} ok")
    else:
        fine = False
        parts.append(f"camera {camera.spec} down ({camera.last_error or 'no frame yet'}), uploads only")
    if pipeline.classifier is not None:
        health = pipeline.classifier.health()
        model = health.get("model") or {}
        parts.append(f"model {model.get('name')} {model.get('version')} on {health.get('backend')}")
    else:
        fine = False
        parts.append(f"classification off ({pipeline.model_error})")
    if kiosk_url:
        parts.append(f"kiosk {kiosk_url}")
    return fine, "; ".join(parts)


def local_url(host: str, port: int) -> str:
    """The URL this machine reaches the kiosk on, whatever address it listens on."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def kiosk_answers(url: str, timeout_s: float = 2.0) -> bool:
    """True when ``GET <url>health`` returns 200 (no proxy: the kiosk is local)."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --- the supervisor thread -------------------------------------------------------------------------------

class SystemdService:
    """The daemon's side of ``Type=notify``: STATUS lines, READY when usable, WATCHDOG while working.

    ``Daemon`` calls ``status`` while it builds its parts, ``start`` once the kiosk server thread runs
    and ``stopping`` when it shuts down. Without ``NOTIFY_SOCKET`` all three do nothing.
    """

    def __init__(self, notifier: Notifier, watchdog_s: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.watchdog_s = watchdog_s
        self._clock = clock
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_status: str | None = None
        self._kiosk_running: Callable[[], bool] | None = None
        self.ready = False
        self.pings = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "SystemdService":
        return cls(Notifier.from_environ(environ), watchdog_period_s(environ))

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.notifier.notify(STATUS=text)

    def start(self, pipeline: "Pipeline", kiosk_url: str | None,
              kiosk_running: Callable[[], bool] | None = None) -> None:
        """Wait for the kiosk and the camera in a thread, send READY, then keep STATUS and the watchdog.
        ``kiosk_running`` says whether the kiosk's server loop still runs: when it has stopped, the pings
        stop too (the screen would show "cannot be reached" for good; a restart brings the kiosk back)."""
        if not self.enabled:
            return
        log.info("systemd notifications via %s%s", self.notifier.via,
                 f", watchdog every {self.watchdog_s / 2:g} s" if self.watchdog_s else ", no watchdog")
        self._kiosk_running = kiosk_running
        self._thread = threading.Thread(target=self._run, args=(pipeline, kiosk_url), name="systemd", daemon=True)
        self._thread.start()

    def stopping(self, text: str) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self.enabled:
            self._last_status = text
            self.notifier.notify(STOPPING=1, STATUS=text)

    # -- the thread ----------------------------------------------------------------------------------------
    def _run(self, pipeline: "Pipeline", kiosk_url: str | None) -> None:
        try:
            if not self._wait_until_usable(pipeline, kiosk_url):
                return
            fine, summary = describe(pipeline, kiosk_url)
            text = f"{'screening' if fine else 'degraded'}: {summary}"
            self._last_status = text
            self.notifier.notify(READY=1, STATUS=text)
            self.ready = True
            log.info("ready: %s", summary)
            self._supervise(pipeline, kiosk_url)
        except Exception:  # a bug here must be visible; without pings systemd restarts us, which is right
            log.exception("systemd supervisor failed: watchdog pings stop")

    def _wait_until_usable(self, pipeline: "Pipeline", kiosk_url: str | None) -> bool:
        if kiosk_url is not None:
            self.status(f"starting: waiting for the kiosk at {kiosk_url}")
            began, complained = self._clock(), False
            while not kiosk_answers(kiosk_url):
                if not complained and self._clock() - began > KIOSK_WAIT_S:
                    complained = True
                    log.error("the kiosk at %s has not answered for %g s: not telling systemd we are ready",
                              kiosk_url, KIOSK_WAIT_S)
                    self.status(f"starting: the kiosk at {kiosk_url} does not answer")
                if self._done.wait(0.1):
                    return False
        if pipeline.camera is not None:
            self.status(f"starting: waiting for the first frame from {pipeline.camera.spec}")
            deadline = self._clock() + CAMERA_WAIT_S
            while pipeline.last_frame_at is None and self._clock() < deadline:
                if self._done.wait(0.05):
                    return False
            if pipeline.last_frame_at is None:
                log.warning("no frame from %s after %g s: ready without the camera (uploads only)",
                            pipeline.camera.spec, CAMERA_WAIT_S)
        return not self._done.is_set()

    def _supervise(self, pipeline: "Pipeline", kiosk_url: str | None) -> None:
        period = self.watchdog_s / 2 if self.watchdog_s else STATUS_INTERVAL_S
        stall_s = stall_limit_s(self.watchdog_s, pipeline.settings.camera.fps)
        was_alive = True
        while not self._done.wait(period):
            state = liveness(pipeline, self._clock(), stall_s)
            if state.alive and self._kiosk_running is not None and not self._kiosk_running():
                state = Liveness(False, "the kiosk server has stopped")
            fine, summary = describe(pipeline, kiosk_url)
            if state.alive:
                if self.watchdog_s:
                    self.notifier.notify(WATCHDOG=1)
                    self.pings += 1
                if not was_alive:
                    log.info("pipeline working again (%s): watchdog pings resumed", state.reason)
                self.status(f"{'screening' if fine else 'degraded'}: {summary}")
            else:
                if was_alive:
                    log.warning("pipeline stalled: %s; watchdog pings held%s", state.reason,
                                ", systemd will restart the daemon" if self.watchdog_s else "")
                self.status(f"stalled: {state.reason}; watchdog pings held; {summary}")
            was_alive = state.alive


# --- logging ---------------------------------------------------------------------------------------------

def under_systemd(environ: Mapping[str, str] | None = None, stderr_fd: int = 2) -> bool:
    """True when this process is a systemd service whose log belongs in the journal: ``JOURNAL_STREAM`` names
    our stderr (device:inode), or ``INVOCATION_ID`` is set and stderr is not a terminal."""
    env = os.environ if environ is None else environ
    stream = env.get("JOURNAL_STREAM")
    if stream:
        try:
            device, inode = (int(part) for part in stream.split(":"))
            stat = os.fstat(stderr_fd)
            if (stat.st_dev, stat.st_ino) == (device, inode):
                return True
        except (ValueError, OSError):
            pass
    if not env.get("INVOCATION_ID"):
        return False
    try:
        return not os.isatty(stderr_fd)
    except OSError:
        return True


def log_handler(environ: Mapping[str, str] | None = None, stderr_fd: int = 2,
                journal_socket: Path = JOURNAL_SOCKET) -> logging.Handler:
    """systemd-python's ``JournalHandler`` (structured fields, priorities) under systemd when both the
    module and journald's socket exist; a plain stderr handler otherwise."""
    if under_systemd(environ, stderr_fd) and journal_socket.exists():
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            pass
        else:
            handler = JournalHandler(SYSLOG_IDENTIFIER="edge")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))  # journald adds the time
            return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def configure_logging(level: str) -> logging.Handler:
    """The root logger at ``level`` with the handler ``log_handler`` picks; returns that handler."""
    handler = log_handler()
    logging.basicConfig(level=level, handlers=[handler])
    return handler
