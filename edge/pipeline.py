"""The daemon loop: the only place where camera, quality gate and classifier are joined.

Frames flow one way: source -> quality gate -> classifier -> ``Result`` handed to every consumer. The
pipeline keeps running when a part is missing: no camera means uploads only; a model that fails its
checks means the quality gate still guides the user while health reports why classification is off.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edge.camera import ResilientSource, open_source, probe_auto
from edge.camera.auto import list_v4l2_devices
from edge.camera.base import CameraSource, ProbeResult
from edge.camera.resilient import STATE_FINISHED, STATE_OK, STATE_STALLED
from edge.config import Settings
from edge.errors import BackendUnavailable, EdgeError, ModelError
from edge.inference import Classifier, load_pack
from edge.types import Frame, Quality, Result
from edge.vision.quality import assess

log = logging.getLogger("edge.pipeline")
ResultConsumer = Callable[[Result], None]


@dataclass
class Step:
    """What one turn of the loop did: the frame (None while the camera is down), its verdict, its result."""

    frame: Frame | None
    quality: Quality | None = None
    result: Result | None = None


LATENCY_BUCKETS_MS = (5, 10, 20, 50, 100, 250, 500, 1000)
CAMERA_SEARCH_S = 5.0  # with camera.source "auto" and none found: how often to check for new /dev/video nodes
SEARCH_JOIN_S = 5.0  # how long close() waits for a camera search under way
CAMERA_STALL_S = 10.0  # a camera that says ok but has sent no frame for this long is reported "stalled"


@dataclass
class Counters:
    frames: int = 0
    classifications: int = 0
    rejects: collections.Counter = field(default_factory=collections.Counter)
    camera_down_reads: int = 0
    failed_frames: int = 0  # frames that raised while being assessed or classified, skipped
    latency_buckets: list = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0

    def observe_latency(self, ms: float) -> None:
        index = next((i for i, bound in enumerate(LATENCY_BUCKETS_MS) if ms <= bound), len(LATENCY_BUCKETS_MS))
        self.latency_buckets[index] += 1
        self.latency_sum_ms += ms


def open_classifier(settings: Settings) -> tuple[Classifier | None, str | None]:
    """The configured classifier, or None with the reason it could not be opened."""
    try:
        pack = load_pack(settings.inference.model_dir)
        return Classifier.open(pack, settings.inference.backend, settings.inference), None
    except (ModelError, BackendUnavailable) as exc:
        log.error("classification disabled: %s", exc)
        return None, str(exc)


def open_camera(settings: Settings, *, quiet: bool = False,
                cameras_only: bool = False) -> tuple[ResilientSource | None, list[ProbeResult]]:
    """Resolve ``camera.source`` (probing for ``auto``) and wrap it so a lost device is reopened.
    ``quiet``: finding nothing is not logged; ``cameras_only``: ``auto`` never falls back to a folder of
    sample images (both for the pipeline's search for a camera plugged in later)."""
    cam = settings.camera
    options = dict(width=cam.width, height=cam.height, fps=cam.fps, replay_dir=cam.replay_dir,
                   shared_dir=settings.shared_dir)
    if cam.source == "none":
        log.info("camera disabled by configuration: uploads only")
        return None, []
    probes: list[ProbeResult] = []
    spec = cam.source
    if spec == "auto":
        found, probes = probe_auto(replay_dir=None if cameras_only else cam.replay_dir,
                                   shared_dir=None if cameras_only else settings.shared_dir,
                                   width=cam.width, height=cam.height, fps=cam.fps, quiet=quiet)
        if found is None:
            if not quiet:
                log.warning("no camera found (%s): uploads only; a camera plugged in later is taken up",
                            "; ".join(f"{p.spec}: {p.detail}" for p in probes))
            return None, probes
        spec = found.spec
        if spec.startswith("file:"):
            log.warning("no camera found: replaying %s instead; uploads are always accepted", spec[len("file:"):])

    def factory() -> CameraSource:
        return open_source(spec, loop=cam.loop, **options)

    return ResilientSource(factory, backoff_initial=cam.reopen_backoff_initial_s,
                           backoff_max=cam.reopen_backoff_max_s), probes


class Pipeline:
    def __init__(self, settings: Settings, camera: ResilientSource | None, classifier: Classifier | None,
                 model_error: str | None = None) -> None:
        self.settings = settings
        self.camera = camera
        self.classifier = classifier
        self.model_error = model_error
        self.counters = Counters()
        self.started = time.monotonic()
        self.last_frame_at: float | None = None
        # Liveness signals for the systemd watchdog (edge.service): when the loop last began a turn, and
        # since when the model has been running (None while idle). Monotonic seconds.
        self.last_turn_at: float | None = None
        self.inference_started_at: float | None = None
        self.camera_call_since: float | None = None  # while the loop is inside camera.read() (open included)
        self.latest: Step | None = None  # the newest frame with its verdict, for the live preview
        self._consumers: list[ResultConsumer] = []
        self._lock = threading.Lock()
        # camera.source "auto" found nothing at start: a camera plugged in later (or enumerated late at boot)
        # is looked for every CAMERA_SEARCH_S, in a thread (probing V4L2 nodes can take seconds), and taken
        # up by the loop
        self._searching = camera is None and settings.camera.source == "auto"
        self._search_at = time.monotonic() + CAMERA_SEARCH_S
        self._search: threading.Thread | None = None
        self._found: queue.Queue[ResilientSource] = queue.Queue(maxsize=1)
        self._nodes = tuple(list_v4l2_devices()) if self._searching else ()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "Pipeline":
        classifier, model_error = open_classifier(settings)
        camera, _ = open_camera(settings)
        return cls(settings, camera, classifier, model_error)

    def subscribe(self, consumer: ResultConsumer) -> None:
        self._consumers.append(consumer)

    def assess(self, frame: Frame) -> Quality:
        """The quality gate's verdict; rejected frames and uploads are counted by reason."""
        quality = assess(frame.image, self.settings.quality)
        self.counters.rejects.update(issue.value for issue in quality.issues)
        return quality

    def classify(self, frame: Frame, quality: Quality, *, wait: bool = True) -> Result | None:
        """Classify one frame and hand the result to every consumer. Serialised: one model, one caller.
        ``wait=False`` (the camera loop's automatic classification) gives up at once, returning None, when
        the model is busy with a kiosk request: the loop must keep reading frames for the live preview."""
        classified = self._classify(frame, quality, wait=wait)
        return classified[0] if classified is not None else None

    def classify_keeping_view(self, frame: Frame, quality: Quality) -> tuple[Result, np.ndarray]:
        """``classify``, and the model-sized crop the model saw (``Classifier.view``): what the kiosk keeps
        for saliency instead of the photo, cropped once, by the classifier that made the result."""
        classified = self._classify(frame, quality, wait=True)
        assert classified is not None  # only a non-waiting call gives up
        return classified

    def _classify(self, frame: Frame, quality: Quality, *, wait: bool) -> tuple[Result, np.ndarray] | None:
        if self.classifier is None:
            raise ModelError(f"classification is unavailable: {self.model_error}")
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            with self._inferring():
                result, view = self.classifier.classify_keeping_view(frame.image, quality)
        finally:
            self._lock.release()
        self.counters.classifications += 1
        self.counters.observe_latency(result.latency_ms)
        for consumer in self._consumers:
            try:
                consumer(result)
            except Exception:  # a broken consumer must not stop screening; it is logged with its traceback
                log.exception("result consumer %r failed", consumer)
        return result, view

    def saliency(self, image, target: int | None = None, *, cropped: bool = False):
        if self.classifier is None:
            raise ModelError(f"classification is unavailable: {self.model_error}")
        with self._lock, self._inferring():
            return self.classifier.saliency(image, target, cropped=cropped)

    @contextlib.contextmanager
    def _inferring(self):
        self.inference_started_at = time.monotonic()
        try:
            yield
        finally:
            self.inference_started_at = None

    def step(self) -> Step:
        if self.camera is None:
            return Step(None)
        self.camera_call_since = time.monotonic()
        try:
            frame = self.camera.read()
        finally:
            self.camera_call_since = None
        if frame is None:
            self.counters.camera_down_reads += 1
            return Step(None)
        self.counters.frames += 1
        self.last_frame_at = time.monotonic()
        quality = self.assess(frame)
        self.latest = Step(frame, quality)
        if not quality.ok:
            return self.latest
        if not (self.settings.pipeline.auto_classify and self.classifier):
            return self.latest
        result = self.classify(frame, quality, wait=False)
        if result is not None:
            self.latest = Step(frame, quality, result)
        return self.latest

    def run(self, stop: threading.Event, max_frames: int | None = None,
            on_step: Callable[[Step], None] | None = None) -> None:
        """Loop until ``stop`` is set (or ``max_frames`` frames were read), paced to ``camera.fps``."""
        period = 1.0 / self.settings.camera.fps
        idle_wait = 0.5
        while not stop.is_set():
            began = self.last_turn_at = time.monotonic()
            if self._searching:
                self._look_for_camera(began)
            try:
                step = self.step()
            # one bad frame (too small, a backend error) must not end screening
            except Exception as exc:  # noqa: BLE001
                self._skip_failed_frame(exc)
                step = Step(None)
            if on_step:
                on_step(step)
            if max_frames is not None and (self.counters.frames >= max_frames or not self._more_frames_can_come()):
                break
            wait = period - (time.monotonic() - began) if step.frame is not None else idle_wait
            if wait > 0:
                stop.wait(wait)

    def _look_for_camera(self, now: float) -> None:
        """Take up a camera the search thread found. A search runs only when the set of ``/dev/video*``
        nodes has changed since the last one (a USB camera plugged in, a CSI driver loaded late): probing
        the same nodes again would find nothing, hold them for seconds and make OpenCV warn on stderr."""
        try:
            found = self._found.get_nowait()
        except queue.Empty:
            found = None
        if found is not None:
            self.camera, self._searching = found, False
            return
        if now < self._search_at or (self._search is not None and self._search.is_alive()):
            return
        self._search_at = now + CAMERA_SEARCH_S
        nodes = tuple(list_v4l2_devices())
        if nodes == self._nodes:
            return
        self._nodes = nodes

        def search() -> None:
            try:
                camera, probes = open_camera(self.settings, quiet=True, cameras_only=True)
            except Exception:  # a probe that fails is a camera not found: try again when nodes change
                log.debug("camera search failed", exc_info=True)
                return
            if camera is not None and not self._closed:
                log.warning("camera found: %s; screening from it",
                            next((probe.spec for probe in probes if probe.ok), self.settings.camera.source))
                self._found.put(camera)

        self._search = threading.Thread(target=search, name="camera-search", daemon=True)
        self._search.start()

    def _more_frames_can_come(self) -> bool:
        return self.camera is not None and self.camera.state != STATE_FINISHED

    def camera_state(self, camera: ResilientSource | None = None) -> str | None:
        """The camera's state, with "stalled" for one that says ok but has sent nothing for ``CAMERA_STALL_S``
        (a read blocked inside a driver): what health shows an operator."""
        camera = camera if camera is not None else self.camera
        if camera is None:
            return None
        state = camera.state
        if state != STATE_OK:
            return state
        # a frame so long ago, or none yet from a read (or open) that has not returned for that long
        since = self.last_frame_at if self.last_frame_at is not None else self.camera_call_since
        if since is not None and time.monotonic() - since > CAMERA_STALL_S:
            return STATE_STALLED
        return state

    def _skip_failed_frame(self, exc: Exception) -> None:
        """Count and log a frame that failed; logged on failures 1, 2, 4, 8 … so a source that fails on every
        frame stays visible in the journal without flooding it."""
        self.counters.failed_frames += 1
        count = self.counters.failed_frames
        if count & (count - 1) == 0:
            if isinstance(exc, EdgeError):
                log.warning("frame skipped (%d so far): %s", count, exc)
            else:
                log.exception("frame skipped (%d so far) after an unexpected error", count)

    def health(self) -> dict:
        source = self.camera  # one reading: a camera found by the search can appear at any moment
        camera, state = None, self.camera_state(source)
        if source is not None:
            camera = {"spec": source.spec, "state": state, "last_error": source.last_error,
                      "reopen_attempts": source.reopen_attempts}
        return {
            "status": "ok" if self.classifier and (source is None or state == STATE_OK) else "degraded",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "camera": camera,
            "inference": self.classifier.health() if self.classifier else {"error": self.model_error},
            "frames": self.counters.frames,
            "classifications": self.counters.classifications,
            "rejects": dict(self.counters.rejects),
            "failed_frames": self.counters.failed_frames,
        }

    def close(self) -> None:
        self._closed = True
        if self._search is not None:
            self._search.join(SEARCH_JOIN_S)  # a probe holds a device for at most its read timeout
        if self.camera is not None:
            self.camera.close()
        if self.classifier is not None:
            self.classifier.close()


def ensure_state_dir(settings: Settings) -> None:
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeError(f"state_dir {settings.state_dir} cannot be created: {exc.strerror}") from None
