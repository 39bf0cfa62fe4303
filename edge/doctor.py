"""``edge doctor``: one pass/fail line per part, so an operator sees which part is wrong on a bad day.

Optional hardware this machine does not have and the settings do not ask for (no Coral plugged in, not a
Jetson, no CSI or USB camera) is shown as ``[ -- ]``, not as a failure: a failure is something to fix.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge.camera import open_source, probe_auto
from edge.config import Settings
from edge.errors import BackendUnavailable, ConfigError, EdgeError, ModelError
from edge.inference.base import AUTO_ORDER, backend_class
from edge.inference.manifest import load_pack
from edge.inference.tflite import runtime_module
from edge.mqtt.admin import AdminSession
from edge.mqtt.connection import check_files
from edge.paths import DEVICE_TREE_MODEL, board_model

# USB ids of the Coral USB Accelerator before and after its firmware is loaded.
CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = False
    absent: bool = False  # optional hardware that is not here and not asked for: neither a pass nor a fault

    @property
    def failed(self) -> bool:
        return not self.ok and not self.absent

    def line(self) -> str:
        mark = " -- " if self.absent and not self.ok else "PASS" if self.ok else "FAIL"
        return f"[{mark}] {self.name}: {self.detail}"


def run_checks(settings: Settings) -> list[Check]:
    coral = _edgetpu_hardware(wanted=settings.inference.backend == "coral")
    return [
        _state_dir(settings.state_dir),
        *_cameras(settings),
        _camera_permissions(),
        _runtime(),
        coral,
        *_model_and_backends(settings, coral_absent=coral.absent),
        *_broker(settings),
        *_systemd_unit(),
    ]


def is_jetson(release: Path = Path("/etc/nv_tegra_release"), device_tree: Path = DEVICE_TREE_MODEL) -> bool:
    """An NVIDIA Jetson (L4T writes nv_tegra_release; the device tree names the board)."""
    return release.exists() or "jetson" in board_model(device_tree)


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _group_of(path: Path) -> str:
    try:
        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        return "?"


def _camera_permissions(dev: Path = Path("/dev")) -> Check:
    """Whether this user may open the camera nodes (V4L2 and libcamera open them read-write)."""
    nodes = sorted(dev.glob("video*")) + sorted(dev.glob("media*"))
    if not nodes:
        return Check("camera permissions", False, f"nothing to check: no {dev}/video* or {dev}/media* device",
                     absent=True)
    denied = [node for node in nodes if not os.access(node, os.R_OK | os.W_OK)]
    if denied:
        groups = sorted({_group_of(node) for node in denied})
        return Check("camera permissions", False,
                     f"user {_user()} cannot open {', '.join(map(str, denied))} (group {', '.join(groups)}): add "
                     "the user to that group, or install firmware_config/etc/udev/rules.d/99-edge.rules")
    return Check("camera permissions", True, f"user {_user()} can open {', '.join(map(str, nodes))}")


def _state_dir(path: Path) -> Check:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("state_dir", False, f"{path} is not writable: {exc.strerror}", required=True)
    return Check("state_dir", True, f"{path} writable", required=True)


def _cameras(settings: Settings) -> list[Check]:
    cam = settings.camera
    found, probes = probe_auto(replay_dir=cam.replay_dir, shared_dir=settings.shared_dir,
                               width=cam.width, height=cam.height, fps=cam.fps)
    checks = [Check(f"camera {p.spec}", p.ok, p.detail, absent=p.absent) for p in probes]
    chosen = found.spec if found else "none: uploads only"
    checks.append(Check("camera choice", found is not None, f"auto would use {chosen} (configured: {cam.source})"))
    if cam.source.strip() not in ("auto", "none"):
        checks.append(_configured_camera(settings))
    return checks


def _configured_camera(settings: Settings) -> Check:
    """The source the daemon will use when one is named: open it and read one frame."""
    cam = settings.camera
    name = f"camera configured ({cam.source})"
    try:
        with open_source(cam.source, width=cam.width, height=cam.height, fps=cam.fps, replay_dir=cam.replay_dir,
                         shared_dir=settings.shared_dir) as source:
            frame = source.read()
    except EdgeError as exc:
        return Check(name, False, f"{exc}: the daemon would keep retrying it; fix camera.source")
    return Check(name, True, f"delivers {frame.image.shape[1]}x{frame.image.shape[0]} frames")


def _runtime() -> Check:
    try:
        module = runtime_module()
    except BackendUnavailable as exc:
        return Check("tflite runtime", False, str(exc), required=True)
    return Check("tflite runtime", True, module.__name__.split(".")[0], required=True)


def _edgetpu_hardware(sys_usb: Path = Path("/sys/bus/usb/devices"), dev: Path = Path("/dev"),
                      wanted: bool = False) -> Check:
    """A Coral on USB or PCIe, and whether this user can open it. None at all is ``absent`` unless the settings
    ask for the coral backend (``wanted``)."""
    found, nodes = [], []
    for device in sorted(sys_usb.glob("*")):
        try:
            ids = ((device / "idVendor").read_text().strip(), (device / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in CORAL_USB_IDS:
            found.append(f"USB {ids[0]}:{ids[1]}")
            try:  # libusb opens /dev/bus/usb/BBB/DDD read-write
                bus, number = int((device / "busnum").read_text()), int((device / "devnum").read_text())
                nodes.append(dev / "bus" / "usb" / f"{bus:03d}" / f"{number:03d}")
            except (OSError, ValueError):
                pass
    apex = sorted(dev.glob("apex_*"))
    found += [str(p) for p in apex]
    nodes += apex
    if found:
        denied = [str(node) for node in nodes if not os.access(node, os.R_OK | os.W_OK)]
        if denied:
            return Check("edge tpu hardware", False, f"{', '.join(found)}: user {_user()} cannot open "
                         f"{', '.join(denied)} (install firmware_config/etc/udev/rules.d/99-edge.rules, which gives "
                         "group edge access, and unplug the Coral once)")
        return Check("edge tpu hardware", True, ", ".join(found))
    return Check("edge tpu hardware", False, "no Coral USB (1a6e:089a, 18d1:9302) or PCIe (/dev/apex_*) device",
                 absent=not wanted)


def _model_and_backends(settings: Settings, coral_absent: bool = False) -> list[Check]:
    """The pack, its files, and each backend. A backend for hardware that is not here (no Coral, not a Jetson)
    and not configured is ``absent``; with the hardware there, or asked for, its failure is a failure."""
    absent = {"coral": coral_absent, "jetson": not is_jetson() and settings.inference.backend != "jetson"}
    try:
        pack = load_pack(settings.inference.model_dir)
    except ModelError as exc:
        return [Check("model pack", False, str(exc), required=True)]
    checks = [Check("model pack", True, f"{pack.manifest.name} {pack.manifest.version} at {pack.root}", required=True)]
    checks += [Check(f"model file {variant}", ok, detail, required=variant == "cpu")
               for variant, ok, detail in pack.verify_all()]
    for name in AUTO_ORDER:
        try:
            backend = backend_class(name)(pack, getattr(settings.inference, name))
        except EdgeError as exc:
            checks.append(Check(f"backend {name}", False, str(exc), required=name == "cpu",
                                absent=absent.get(name, False)))
            continue
        checks.append(Check(f"backend {name}", True, backend.describe(), required=name == "cpu"))
        backend.close()
    return checks


def _broker(settings: Settings, timeout_s: float = 3.0) -> list[Check]:
    """When MQTT is on: can this machine open a TCP connection to the broker? (Not required: results wait in
    the outbox while the broker is away.)"""
    mqtt = settings.mqtt
    if not mqtt.enabled:
        return []
    where = f"{mqtt.host}:{mqtt.port}"
    try:
        check_files(mqtt)
    except ConfigError as exc:  # the daemon refuses to start with these
        return [Check("mqtt settings", False, str(exc), required=True)]
    try:
        with socket.create_connection((mqtt.host, mqtt.port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return [Check("mqtt broker", False, f"cannot reach {where} ({reason}): check the network, mqtt.host and "
                      "mqtt.port; results wait in the outbox meanwhile")]
    try:  # a real MQTT session: TLS, the user name and the password are checked as the daemon would use them
        with AdminSession(mqtt):
            pass
    except EdgeError as exc:
        return [Check("mqtt broker", False, f"{exc}: check mqtt.username, the password and the TLS files")]
    return [Check("mqtt broker", True, f"{where} accepted an MQTT session{' over TLS' if mqtt.tls.active else ''}")]


SYSTEMD_UNIT = "edge.service"
UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState", "NRestarts", "Result", "StatusText")


def _systemd_unit(run_dir: Path = Path("/run/systemd/system")) -> list[Check]:
    """On a machine booted with systemd: is edge.service installed, enabled and running, and what does it say?"""
    systemctl = shutil.which("systemctl")
    if not run_dir.is_dir() or systemctl is None:
        return []
    try:
        shown = subprocess.run([systemctl, "show", SYSTEMD_UNIT, "--property=" + ",".join(UNIT_PROPERTIES)],
                               capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check(f"systemd {SYSTEMD_UNIT}", False, f"systemctl show failed: {exc}")]
    return [unit_check(shown)]


def unit_check(shown: str) -> Check:
    """A check from ``systemctl show edge.service --property=…`` output (KEY=VALUE lines)."""
    props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    name = f"systemd {SYSTEMD_UNIT}"
    if props.get("LoadState") != "loaded":
        return Check(name, False, "not installed: run sudo ./setup.sh --device")
    active = props.get("ActiveState") == "active"
    detail = (f"{props.get('ActiveState')} ({props.get('SubState')}), {props.get('UnitFileState')}, "
              f"{props.get('NRestarts', '?')} restarts")
    if props.get("StatusText"):
        detail += f"; says: {props['StatusText']}"
    if not active:
        detail += f"; last result {props.get('Result')}: see journalctl -u edge -n 50"
    return Check(name, active, detail)
