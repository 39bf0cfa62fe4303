"""systemd integration: the units pass `systemd-analyze verify`, and the real daemon speaks sd_notify to a real
socket — READY once the kiosk answers, STATUS lines, WATCHDOG pings only while frames flow — and logs to the
journal only when it runs as a service."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from edge.config import load_settings
from edge.paths import PROJECT_ROOT
from edge.pipeline import Pipeline
from edge.service import (INFERENCE_STUCK_S, Notifier, SystemdService, describe, liveness, local_url,
                          log_handler, stall_limit_s, under_systemd, watchdog_period_s)

UNITS = PROJECT_ROOT / "systemd"
JETSON_DROP_IN = PROJECT_ROOT / "firmware_config/jetson/edge.service.d/jetson.conf"


def systemd_analyze() -> str:
    """Debian's systemd package, which `setup.sh --dev` installs: its absence is a broken set-up, not a skip."""
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: ./setup.sh --dev installs Debian's systemd package")
    return found


# --- a socket like systemd's notify socket --------------------------------------------------------------

class NotifyListener:
    """A unix datagram socket collecting sd_notify messages as dicts, each with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._closed = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._changed:
                self.messages.append((time.monotonic(), fields))
                self._changed.notify_all()

    def wait_for(self, predicate, timeout: float, after: float = 0.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for arrived, fields in self.messages:
                    if arrived >= after and predicate(fields):
                        return fields
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching sd_notify message in {timeout} s; got {self.messages[-8:]}")
                self._changed.wait(left)

    def since(self, after: float, key: str) -> list[str]:
        with self._changed:
            return [fields[key] for arrived, fields in self.messages if arrived >= after and key in fields]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self._sock.close()


@pytest.fixture
def notify_socket():
    folder = Path(tempfile.mkdtemp(prefix="edge-notify-", dir="/tmp"))  # AF_UNIX paths must stay short
    listener = NotifyListener(folder / "notify.sock")
    yield listener
    listener.close()
    shutil.rmtree(folder, ignore_errors=True)


# --- the unit files ---------------------------------------------------------------------------------------

def render_units(folder: Path, with_jetson_drop_in: bool = False) -> dict[str, Path]:
    """Copies of the units whose ExecStart binaries exist here, so verify checks everything else."""
    edge_unit = (UNITS / "edge.service").read_text()
    assert "ExecStart=/opt/edge/.venv/bin/edge run" in edge_unit
    kiosk_unit = (UNITS / "edge-kiosk.service").read_text()
    assert "ExecStart=/usr/bin/cage " in kiosk_unit
    units = {
        "edge.service": edge_unit.replace("/opt/edge/.venv/bin/edge", str(PROJECT_ROOT / ".venv/bin/edge")),
        "edge-kiosk.service": kiosk_unit.replace("/usr/bin/cage", shutil.which("true")),
    }
    paths = {}
    for name, text in units.items():
        paths[name] = folder / name
        paths[name].write_text(text)
    if with_jetson_drop_in:
        (folder / "edge.service.d").mkdir()
        shutil.copy(JETSON_DROP_IN, folder / "edge.service.d" / "jetson.conf")
    return paths


def verify(unit: Path) -> list[str]:
    """`systemd-analyze verify` problems about our files (warnings count: verify exits 0 on unknown keys)."""
    result = subprocess.run([systemd_analyze(), "verify", "--man=no", "--generators=no", str(unit)],
                            capture_output=True, text=True, timeout=60, cwd=unit.parent)
    output = (result.stdout + result.stderr).splitlines()
    ours = [line for line in output if unit.name in line or "jetson.conf" in line]
    if result.returncode != 0:
        ours.append(f"exit status {result.returncode}: {output}")
    return ours


def test_units_pass_systemd_analyze_verify(tmp_path):
    units = render_units(tmp_path, with_jetson_drop_in=True)
    for unit in units.values():
        assert verify(unit) == [], unit.name


@pytest.mark.parametrize("typo", ["WatchdogSce=30", "Type=notfy", "ProtectSystem=strickt"])
def test_verify_catches_a_typo(tmp_path, typo):
    unit = render_units(tmp_path)["edge.service"]
    unit.write_text(unit.read_text().replace("[Service]\n", f"[Service]\n{typo}\n", 1))
    assert verify(unit), f"{typo} went unnoticed"


def test_edge_unit_exposure_is_low(tmp_path):
    """systemd's own score of the sandbox (0 = locked down, 10 = fully exposed)."""
    unit = render_units(tmp_path)["edge.service"]
    result = subprocess.run([systemd_analyze(), "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for edge\.service: ([0-9.]+)", result.stdout)
    assert score, result.stdout[-2000:] + result.stderr
    assert float(score.group(1)) <= 2.5


def unit_settings(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_edge_unit_is_a_hardened_notify_service_that_restarts_on_exit_75():
    unit = unit_settings(UNITS / "edge.service")
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["Restart"] == ["on-failure"] and "75" in unit["RestartForceExitStatus"]
    assert "75" not in " ".join(unit.get("SuccessExitStatus", []))
    assert int(unit["WatchdogSec"][0]) > 0 and unit["StartLimitBurst"] and unit["StartLimitIntervalSec"]
    # every start counts toward the limit: a bad pack's starts before its rollback, plus an update's and an
    # administrator's restarts, must not reach it, or the rolled-back device would stay down
    from edge.updates import MAX_TRIAL_BOOTS

    assert int(unit["StartLimitBurst"][0]) > 2 * (MAX_TRIAL_BOOTS + 1)
    assert unit["User"] == ["edge"] and unit["StateDirectory"] == ["edge"] and unit["ConfigurationDirectory"] == ["edge"]
    assert "EDGE_CONFIG=/etc/edge/config.toml" in unit["Environment"]
    assert unit["ProtectSystem"] == ["strict"] and unit["ProtectHome"] == ["yes"] and unit["PrivateTmp"] == ["yes"]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["CapabilityBoundingSet"] == [""]
    assert unit["ReadWritePaths"] == ["/var/lib/edge"] and unit["DevicePolicy"] == ["closed"]
    assert {"char-video4linux rw", "char-usb_device rw", "/dev/apex_0 rw"} <= set(unit["DeviceAllow"])
    # the Pi camera (libcamera) needs the media controller and DMA heaps
    assert {"char-media rw", "char-dma_heap rw"} <= set(unit["DeviceAllow"]), unit["DeviceAllow"]
    assert unit["LimitCORE"] == ["0"]  # a watchdog kill (SIGABRT) must not dump a patient's photos to disk
    assert int(unit["TimeoutStopSec"][0]) >= 50  # the parts' own stop bounds add up to about 46 s
    assert set(unit["RestrictAddressFamilies"][0].split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    kiosk = unit_settings(UNITS / "edge-kiosk.service")
    assert kiosk["After"][0] == "edge.service" and kiosk["Restart"] == ["always"]
    assert "http://127.0.0.1:8080/" in kiosk["ExecStart"][0] and "--kiosk" in kiosk["ExecStart"][0]
    waits = [int(re.search(r"timeout (\d+)", pre).group(1)) for pre in kiosk["ExecStartPre"] if "timeout" in pre]
    assert waits and int(kiosk["TimeoutStartSec"][0]) > max(waits)  # the wait for the daemon is not cut short
    # cage needs the logind session's runtime dir, /run/user/<uid>: ProtectHome=yes or read-only hides it
    assert kiosk.get("ProtectHome", ["no"]) == ["no"] and not any(
        "/run/user" in path for path in kiosk.get("InaccessiblePaths", []) + kiosk.get("ReadOnlyPaths", []))
    # setterm writes escape sequences to stdout (the journal here): they must be sent to the tty
    setterm = [pre for pre in kiosk["ExecStartPre"] if "setterm" in pre]
    assert setterm and all(">&0" in pre or ">/dev/tty1" in pre for pre in setterm)


# --- sd_notify ------------------------------------------------------------------------------------------

def test_notify_is_a_no_op_without_notify_socket():
    notifier = Notifier.from_environ({})
    assert not notifier.enabled and notifier.via == "off"
    assert notifier.notify(READY=1) is False
    service = SystemdService.from_environ({})
    service.status("starting")
    service.start(pipeline=None, kiosk_url="http://127.0.0.1:1/")  # no socket: no thread, nothing touched
    service.stopping("stopping")
    assert service._thread is None and not service.ready


def test_pure_socket_notify_reaches_the_socket(notify_socket):
    notifier = Notifier(str(notify_socket.path), use_library=False)
    assert notifier.via == "socket"
    assert notifier.notify(READY=1, STATUS="two\nlines")  # a newline must not start another field
    assert notify_socket.wait_for(lambda m: m.get("READY") == "1", 5) == {"READY": "1", "STATUS": "two lines"}


def test_pure_socket_notify_to_an_abstract_socket():
    name = f"edge-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name, use_library=False).notify(WATCHDOG=1)
        assert sock.recv(100) == b"WATCHDOG=1"


def test_systemd_python_notify_reaches_the_socket(notify_socket, monkeypatch):
    import systemd.daemon  # noqa: F401 - systemd-python: setup.sh installs it (libsystemd-dev)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    notifier = Notifier.from_environ()
    assert notifier.via == "systemd-python"
    assert notifier.notify(STATUS="hello from libsystemd")
    notify_socket.wait_for(lambda m: m.get("STATUS") == "hello from libsystemd", 5)


def test_without_systemd_python_the_socket_protocol_and_stderr_take_over(notify_socket, monkeypatch, tmp_path):
    for module in ("systemd", "systemd.daemon", "systemd.journal"):
        monkeypatch.setitem(sys.modules, module, None)  # as if the `systemd` extra were not installed
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    notifier = Notifier.from_environ()
    assert notifier.via == "socket" and notifier.notify(STATUS="no libsystemd")
    notify_socket.wait_for(lambda m: m.get("STATUS") == "no libsystemd", 5)
    journal = tmp_path / "journal.socket"
    journal.touch()
    with open(tmp_path / "stderr", "w") as stream:
        assert type(log_handler({"INVOCATION_ID": "abc"}, stream.fileno(), journal)) is logging.StreamHandler


def test_a_missing_socket_is_not_an_error(tmp_path):
    assert Notifier(str(tmp_path / "gone.sock"), use_library=False).notify(READY=1) is False


def test_watchdog_period_follows_systemd_rules():
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # meant for another pid
    assert watchdog_period_s({}) is None and watchdog_period_s({"WATCHDOG_USEC": "x"}) is None
    assert stall_limit_s(30.0, fps=15) == 15.0 and stall_limit_s(1.0, fps=15) == pytest.approx(10 / 15)


def test_local_url_reaches_any_listen_address():
    assert local_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/"
    assert local_url("::", 8080) == "http://[::1]:8080/"
    assert local_url("127.0.0.1", 81) == "http://127.0.0.1:81/"


def test_liveness_of_a_real_pipeline_without_camera():
    settings = load_settings(None, {"camera": {"source": "none"}})
    pipeline = Pipeline(settings, camera=None, classifier=None, model_error="test: no model")
    now = time.monotonic()
    assert not liveness(pipeline, now, 1.0).alive  # the loop has not started
    pipeline.last_turn_at = now
    assert liveness(pipeline, now, 1.0).alive  # no camera: the loop turning is enough
    pipeline.inference_started_at = now - INFERENCE_STUCK_S - 1
    state = liveness(pipeline, now, 1.0)
    assert not state.alive and "inference" in state.reason  # a hung model stops the pings
    pipeline.inference_started_at = None
    assert not liveness(pipeline, now + 60, 1.0).alive  # a loop that stopped turning


@pytest.mark.parametrize("frames_before", [0, 3])
def test_a_camera_whose_first_read_never_returns_does_not_cost_the_uploads(frames_before, monkeypatch):
    """A camera that opens but never returns its first frame (a loose CSI ribbon, a wedged GStreamer) stopped
    the pings: the watchdog restarted the daemon, the same happened again, and systemd gave up, uploads and
    all. A first read that never returns keeps the daemon alive and says so; a camera that delivered and
    then hung still stops the pings (a restart may bring it back)."""
    import edge.pipeline
    from test_pipeline import HeldCamera

    from edge.camera.resilient import ResilientSource

    monkeypatch.setattr(edge.pipeline, "CAMERA_STALL_S", 0.5)
    held = HeldCamera(frames=frames_before, spec="fake:wedged")
    settings = load_settings(None, {"camera": {"source": "none", "fps": 20}})
    pipeline = Pipeline(settings, camera=ResilientSource(held.factory), classifier=None, model_error="no model")
    stop = threading.Event()
    loop = threading.Thread(target=pipeline.run, args=(stop,), name="pipeline")
    loop.start()
    try:
        assert held.blocked.wait(10), "the fake camera never blocked"
        time.sleep(0.6)
        state = liveness(pipeline, time.monotonic() + 60, 1.0)
        fine, status = describe(pipeline, None)
        assert pipeline.health()["camera"]["state"] == "stalled" and not fine
        if frames_before == 0:
            assert state.alive and "first frame" in state.reason, state
            assert "has sent no frame" in status, status
            pipeline.inference_started_at = time.monotonic() - INFERENCE_STUCK_S - 1  # an upload's, hung
            hung = liveness(pipeline, time.monotonic() + 60, 1.0)
            assert not hung.alive and "inference" in hung.reason, hung  # still a reason to restart
            pipeline.inference_started_at = None
        else:
            assert not state.alive and "has not turned" in state.reason, state
    finally:
        stop.set()
        pipeline.camera.close()  # what releases a read blocked in the driver
        loop.join(10)


def test_watchdog_pings_stop_when_the_kiosk_server_has_stopped(notify_socket):
    """After READY only the pipeline was watched: a kiosk whose server loop died left the screen at "cannot be
    reached" for good while the pings went on. Now its death holds the pings, and systemd restarts us."""
    settings = load_settings(None, {"camera": {"source": "none"}})
    pipeline = Pipeline(settings, camera=None, classifier=None, model_error="no model")
    service = SystemdService(Notifier(str(notify_socket.path), use_library=False), watchdog_s=0.4)
    kiosk = {"running": True}
    stop = threading.Event()

    def loop_turning():  # the pipeline loop of a device without a camera
        while not stop.wait(0.05):
            pipeline.last_turn_at = time.monotonic()

    turner = threading.Thread(target=loop_turning, name="turner")
    turner.start()
    try:
        service.start(pipeline, kiosk_url=None, kiosk_running=lambda: kiosk["running"])
        notify_socket.wait_for(lambda m: m.get("WATCHDOG") == "1", timeout=5)
        kiosk["running"] = False
        stalled = notify_socket.wait_for(lambda m: "kiosk server has stopped" in m.get("STATUS", ""), timeout=5)
        assert stalled["STATUS"].startswith("stalled:")
        quiet = time.monotonic()
        time.sleep(0.7)
        assert notify_socket.since(quiet, "WATCHDOG") == []  # no pings while the kiosk is down
    finally:
        stop.set()
        service.stopping("stopping")
        turner.join(5)


# --- journald ------------------------------------------------------------------------------------------

def test_journal_handler_only_under_systemd(tmp_path):
    import systemd.journal  # noqa: F401 - systemd-python: setup.sh installs it
    from systemd.journal import JournalHandler

    journal = tmp_path / "journal.socket"
    journal.touch()
    stderr_file = tmp_path / "stderr"
    with open(stderr_file, "w") as stream:
        fd = stream.fileno()
        stat = os.fstat(fd)
        service_env = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        assert under_systemd(service_env, fd) and under_systemd({"INVOCATION_ID": "abc"}, fd)
        assert isinstance(log_handler(service_env, fd, journal), JournalHandler)
        assert isinstance(log_handler({"INVOCATION_ID": "abc"}, fd, journal), JournalHandler)
        assert not under_systemd({}, fd)
        assert type(log_handler({}, fd, journal)) is logging.StreamHandler  # a shell, a test, a laptop
        # journald's socket missing (a container): stderr, never a handler that cannot deliver
        assert type(log_handler(service_env, fd, tmp_path / "no-journal")) is logging.StreamHandler
        # JOURNAL_STREAM naming another file: our stderr was redirected, so it is not the journal
        assert not under_systemd({"JOURNAL_STREAM": "1:2"}, fd)


# --- the real daemon with a real notify socket ------------------------------------------------------------

def test_daemon_ready_status_and_watchdog_only_while_frames_flow(tmp_path, replay_folder, notify_socket):
    env = {key: value for key, value in os.environ.items()
           if key not in ("INVOCATION_ID", "JOURNAL_STREAM", "WATCHDOG_PID", "LISTEN_FDS")}
    env.update({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000", "EDGE_KIOSK__PORT": "0",
                "EDGE_ASSISTANT__ENABLED": "false", "EDGE_STATE_DIR": str(tmp_path / "state"),
                "EDGE_CAMERA__REOPEN_BACKOFF_MAX_S": "1"})
    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log_file:
        daemon = subprocess.Popen([sys.executable, "-m", "edge", "run", "--source", f"file:{replay_folder}"],
                                  env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    try:
        ready = notify_socket.wait_for(lambda m: m.get("READY") == "1", timeout=90)
        url = re.search(r"kiosk (http://\S+/)", ready["STATUS"]).group(1)
        with urllib.request.urlopen(url + "health", timeout=5) as response:  # the kiosk answers at READY
            health = json.load(response)
        assert health["frames"] > 0 and health["camera"]["state"] == "ok"  # and the camera had delivered
        assert ready["STATUS"].startswith("screening: camera file:")
        assert "model ham10000-mobilenetv2-int8" in ready["STATUS"]
        before_ready = notify_socket.since(0, "STATUS")
        assert before_ready[0] == "starting: loading the model and opening the camera"
        assert any(status.startswith("starting: waiting for the kiosk") for status in before_ready)

        flowing = time.monotonic()
        time.sleep(2.6)  # pings every 0.5 s while frames flow
        assert len(notify_socket.since(flowing, "WATCHDOG")) >= 3

        hidden = replay_folder.rename(tmp_path / "replay-gone")  # the camera disappears: frames stop
        stalled = notify_socket.wait_for(lambda m: m.get("STATUS", "").startswith("stalled:"), timeout=10)
        assert "no camera frame" in stalled["STATUS"] and "down" in stalled["STATUS"]
        quiet = time.monotonic()
        time.sleep(2.5)
        assert notify_socket.since(quiet, "WATCHDOG") == []  # no pings: systemd would restart the daemon

        hidden.rename(replay_folder)  # back: the camera is reopened and the pings resume
        notify_socket.wait_for(lambda m: m.get("WATCHDOG") == "1", timeout=20, after=time.monotonic())
        notify_socket.wait_for(lambda m: m.get("STATUS", "").startswith("screening:"), timeout=5,
                               after=quiet)

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        stopping = notify_socket.wait_for(lambda m: m.get("STOPPING") == "1", timeout=5)
        assert stopping["STATUS"] == "stopping"
    except BaseException:
        print(log_path.read_text()[-6000:])
        raise
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    log_text = log_path.read_text()
    assert "systemd notifications via" in log_text  # stderr logging, not the journal: not a service here
    assert "pipeline stalled: no camera frame" in log_text and "watchdog pings resumed" in log_text
