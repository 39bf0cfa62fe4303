"""``edge run``: the pipeline loop, the kiosk server and MQTT (when ``mqtt.host`` is set), started and stopped together.

This is the composition root: it builds every service from the settings and wires them, so the services
themselves never look each other up.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from edge import __version__, sqlite_files
from edge.config import Settings
from edge.pipeline import Pipeline, ensure_state_dir
from edge.screening import PipelineScreening
from edge.service import SystemdService, liveness, local_url, stall_limit_s

log = logging.getLogger("edge")
TRIAL_INFERENCE_LIMIT_S = 10.0  # a normal inference takes milliseconds, a saliency map about a second
LOOP_STOP_S = 5.0  # how long a stop waits for the camera loop before closing everything without it
FIRST_OPEN_WAIT_S = 5.0  # the start-up line waits this long for the camera's first open to say how it went


def _log_result(result) -> None:
    """The journal outlives a purge and is stamped to the second: what a screening found, and the id that joins
    it to the history's note and the printed report, are written to it only at DEBUG."""
    log.info("screening done in %.1f ms", result.latency_ms)
    log.debug("result %s %s p=%.3f urgency=%s", result.id[:8], result.label, result.confidence, result.urgency.value)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.systemd = SystemdService.from_environ()  # sd_notify; does nothing without NOTIFY_SOCKET
        self.systemd.status("starting: loading the model and opening the camera")
        ensure_state_dir(settings)
        # The pack to load: one installed by a model update (counted as a trial boot, rolled back after a
        # crash loop), else the configured one.
        from edge.updates import ModelStore, resolve_model_dir

        model_dir = resolve_model_dir(settings)
        settings = settings.model_copy(
            update={"inference": settings.inference.model_copy(update={"model_dir": model_dir})})
        self.models = ModelStore.from_settings(settings)
        self.settings = settings
        self.pipeline = Pipeline.from_settings(settings)
        self.pipeline.subscribe(_log_result)
        self.screening = PipelineScreening(self.pipeline)
        self.assistant = self._assistant()
        self.history = self._history()
        self.exit_code = 0
        self._stop: threading.Event | None = None
        self.mqtt = self._mqtt()
        self.app = None
        self.server = self._kiosk_server()

    def _assistant(self):
        if not (self.settings.kiosk.enabled and self.settings.assistant.enabled):
            return None
        try:
            from edge.assistant.service import build_assistant
        except ImportError as exc:
            log.warning("assistant unavailable (%s): reports come from templates", exc)
            return None
        return build_assistant(self.settings, self.pipeline.classifier.pack if self.pipeline.classifier else None)

    def _history(self):
        if not self.settings.kiosk.health_worker_mode:
            return None
        from edge.store import History

        return History(self.settings.state_dir / "history.sqlite")

    def _mqtt(self):
        """The MQTT service, subscribed to results, or None when ``mqtt.host`` is empty (the default)."""
        if not self.settings.mqtt.enabled:
            return None
        from edge.mqtt.publisher import MqttService

        service = MqttService(self.settings, health=self.pipeline.health, purge=self._purge_local_data,
                              restart=self._restart)
        self.pipeline.subscribe(service.publish_result)
        return service

    def _purge_local_data(self) -> dict[str, int]:
        """Everything this device keeps about screenings besides the MQTT outbox (an admin's command)."""
        purged = {}
        path = self.settings.state_dir / "history.sqlite"
        if self.history is not None:
            purged["history"] = self.history.purge()
        elif path.exists():
            from edge.store import History

            history = History(path)
            purged["history"] = history.purge()
            history.close()
        elif sqlite_files.remove_set_aside(path):  # only copies of a damaged one: nothing new is created
            purged["history"] = 0
        if self.app is not None:
            self.app.extensions["edge"]["sessions"].new_patient()  # the session and the images it held
            purged["kiosk_session"] = 1
        return purged

    def _restart(self) -> None:
        """An admin's ``restart``: stop cleanly and exit with the code systemd restarts on."""
        from edge.mqtt.publisher import RESTART_EXIT_CODE

        log.warning("restart requested by an administrator")
        self.exit_code = RESTART_EXIT_CODE
        if self._stop is not None:
            self._stop.set()

    def _trial_health(self) -> tuple[bool, str]:
        """Whether a pack on trial may be committed now, and why not: the loop turns, no inference is stuck,
        systemd was told we are ready, and frames are not failing with nothing classified."""
        pipeline = self.pipeline
        now = time.monotonic()
        state = liveness(pipeline, now, stall_limit_s(self.systemd.watchdog_s, self.settings.camera.fps))
        if not state.alive:
            return False, state.reason
        busy_since = pipeline.inference_started_at
        if busy_since is not None and now - busy_since > TRIAL_INFERENCE_LIMIT_S:
            return False, f"an inference has been running for more than {TRIAL_INFERENCE_LIMIT_S:g} s"
        if self.systemd.enabled and not self.systemd.ready:
            return False, "not ready yet"
        counters = pipeline.counters
        if counters.failed_frames and not counters.classifications:
            return False, f"{counters.failed_frames} frames failed and none was classified"
        return True, state.reason

    def _kiosk_server(self):
        if not self.settings.kiosk.enabled:
            return None
        from edge.kiosk.app import create_app
        from edge.kiosk.server import KioskServer

        app = create_app(self.screening, self.settings, assistant=self.assistant, history=self.history,
                         mqtt=self.mqtt)
        self.app = app
        kiosk = self.settings.kiosk
        return KioskServer(app, kiosk.host, kiosk.port)

    def run(self, stop: threading.Event, max_frames: int | None = None) -> None:
        self._stop = stop
        from edge.updates import watch_trial

        # A freshly installed pack must prove itself: rolled back now if it cannot run here, committed
        # after a healthy while otherwise.
        watch_trial(self.models, self.settings.inference.model_dir, self.pipeline.classifier, stop=stop,
                    restart=self._restart, healthy=self._trial_health)
        if stop.is_set():  # rolled back: exit with the restart code so systemd starts the known-good pack
            self.close()
            return
        if self.mqtt is not None:
            self.mqtt.start()
        if self.pipeline.camera is None:
            log.warning("no camera: this device accepts uploads only")
        if self.server is not None:
            self.server.start()
            log.info("kiosk UI on http://%s:%s/", self.settings.kiosk.host, self.server.port)
        # READY=1 once the kiosk answers and the camera delivered (see edge.service); WATCHDOG=1 while frames flow.
        self.systemd.start(self.pipeline, kiosk_url=local_url(self.settings.kiosk.host, self.server.port)
                           if self.server is not None else None,
                           kiosk_running=(lambda: self.server.running) if self.server is not None else None)
        try:
            self._run_loop(stop, max_frames)
        finally:
            self.systemd.stopping("stopping: restart requested by an administrator" if self.exit_code
                                  else "stopping")
            log.info("stopping: %s", json.dumps(self.pipeline.health()))
            self.close()

    def _run_loop(self, stop: threading.Event, max_frames: int | None) -> None:
        """The pipeline loop on its own thread, so that a stop (SIGTERM, Ctrl-C, a restart) is honoured even
        while a camera read is stuck inside a driver: the rest of the daemon still closes in order, and the
        camera is closed under the stuck read (``ResilientSource.close``)."""
        failure: list[BaseException] = []

        def loop() -> None:
            try:
                self.pipeline.run(stop, max_frames=max_frames)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
                failure.append(exc)

        thread = threading.Thread(target=loop, name="pipeline", daemon=True)
        thread.start()
        if self.pipeline.camera is not None:  # the loop opens the camera first: report what that gave
            deadline = time.monotonic() + FIRST_OPEN_WAIT_S
            while not (self.pipeline.camera.tried.wait(0.1) or stop.is_set() or not thread.is_alive()
                       or time.monotonic() > deadline):
                pass
        log.info("edge %s running: %s", __version__, json.dumps(self.pipeline.health()))
        while thread.is_alive() and not stop.wait(0.5):
            pass
        thread.join(LOOP_STOP_S)
        if thread.is_alive():
            log.error("the camera loop did not stop within %.0f s (a read is stuck in the camera driver): "
                      "stopping without it", LOOP_STOP_S)
        if failure:
            raise failure[0]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            from edge.kiosk.app import close_app

            close_app(self.app)
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.assistant is not None:
            self.assistant.close()
        if self.history is not None:
            self.history.close()
        self.pipeline.close()
