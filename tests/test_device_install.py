"""The device install (`setup.sh --device --root DIR`, `--uninstall`) into a temporary root, the firmware_config
files it installs, and the `edge doctor` checks an operator runs on the device."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_systemd import systemd_analyze

from edge.config import load_settings
from edge.doctor import _broker, _camera_permissions, _edgetpu_hardware, unit_check
from edge.paths import PROJECT_ROOT

FIRMWARE = PROJECT_ROOT / "firmware_config"
ORIGINAL_CONFIG_TXT = "# the Pi's own settings\ndtparam=audio=on\n[cm4]\notg_mode=1\n"
ORIGINAL_RULE = 'SUBSYSTEM=="usb", MODE="0664"\n'
INCLUDE_BLOCK = ("# edge: camera and display settings (added by setup.sh --device, removed by setup.sh --uninstall)\n"
                 "[all]\ninclude edge.txt\n")


def setup_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROJECT_ROOT / "setup.sh"), *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=120)


def edge_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROJECT_ROOT / ".venv/bin/edge"), *args], capture_output=True, text=True, timeout=60)


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under root: content, mode, mtime."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o7777, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def pi_root(tmp_path) -> Path:
    """A device root as a Raspberry Pi OS image has it, with one file of ours already there (to be backed up)."""
    root = tmp_path / "root"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text(ORIGINAL_CONFIG_TXT)
    (root / "etc/udev/rules.d").mkdir(parents=True)
    (root / "etc/udev/rules.d/99-edge.rules").write_text(ORIGINAL_RULE)
    return root


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_device_install_lays_out_every_file_with_backups(pi_root):
    result = setup_sh("--device", "--root", str(pi_root), "--platform", "pi")
    assert result.returncode == 0, result.stderr
    assert "nothing started" in result.stdout and "setup: installing" not in result.stdout  # no apt, no pip
    expected = {
        "etc/systemd/system/edge.service": 0o644, "etc/systemd/system/edge-kiosk.service": 0o644,
        "etc/udev/rules.d/99-edge.rules": 0o644, "etc/pam.d/edge-kiosk": 0o644,
        "etc/edge/config.toml": 0o640, "boot/firmware/edge.txt": 0o644,
    }
    for relative, wanted in expected.items():
        assert (pi_root / relative).is_file(), relative
        assert mode(pi_root / relative) == wanted, relative
    assert (pi_root / "var/lib/edge").is_dir() and mode(pi_root / "var/lib/edge") == 0o750
    assert (pi_root / "etc/udev/rules.d/99-edge.rules").read_bytes() == \
        (FIRMWARE / "etc/udev/rules.d/99-edge.rules").read_bytes()
    assert (pi_root / "etc/udev/rules.d/99-edge.rules.edge-backup").read_text() == ORIGINAL_RULE
    assert (pi_root / "boot/firmware/config.txt").read_text() == ORIGINAL_CONFIG_TXT + INCLUDE_BLOCK
    assert (pi_root / "boot/firmware/config.txt.edge-backup").read_text() == ORIGINAL_CONFIG_TXT
    assert not (pi_root / "etc/systemd/system/edge.service.d").exists()  # the Jetson drop-in is for Jetsons

    # The unit and the config name this checkout (the device convention is /opt/edge), and both are valid.
    unit = (pi_root / "etc/systemd/system/edge.service").read_text()
    assert f"ExecStart={PROJECT_ROOT}/.venv/bin/edge run" in unit
    check = edge_cli("config", "check", str(pi_root / "etc/edge/config.toml"))
    assert check.returncode == 0, check.stderr
    assert f'model_dir = "{PROJECT_ROOT}/models/' in (pi_root / "etc/edge/config.toml").read_text()
    verify = subprocess.run([systemd_analyze(), "verify", "--man=no", "--generators=no",
                             str(pi_root / "etc/systemd/system/edge.service")],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "edge.service" not in verify.stderr, verify.stderr


def test_the_kiosk_browser_gets_a_policy_against_downloads_and_saving_pages(pi_root, tmp_path):
    """A privacy review: the history's CSV link and the print dialog's "Save as PDF" wrote patient data into
    the kiosk user's home, which no purge reaches. The policy comes with --kiosk only: it would apply to every
    Chromium on the machine."""
    policy = "etc/chromium/policies/managed/edge-kiosk.json"
    result = setup_sh("--device", "--root", str(pi_root), "--platform", "pi")
    assert result.returncode == 0, result.stderr
    assert not (pi_root / policy).exists()
    kiosk_root = tmp_path / "kiosk-root"
    shutil.copytree(pi_root, kiosk_root, symlinks=True)
    result = setup_sh("--device", "--root", str(kiosk_root), "--platform", "pi", "--kiosk")
    assert result.returncode == 0, result.stderr
    installed = json.loads((kiosk_root / policy).read_text())
    assert (kiosk_root / policy.replace("chromium/", "chromium-browser/")).read_text() == (kiosk_root / policy).read_text()
    assert installed["DownloadRestrictions"] == 3 and installed["PrinterTypeDenyList"] == ["pdf"]
    assert installed["DeveloperToolsAvailability"] == 2 and mode(kiosk_root / policy) == 0o644
    uninstalled = setup_sh("--uninstall", "--root", str(kiosk_root))
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert not (kiosk_root / policy).exists()
    assert not (kiosk_root / policy.replace("chromium/", "chromium-browser/")).exists()


def test_device_install_rerun_changes_nothing_and_uninstall_restores(pi_root):
    assert setup_sh("--device", "--root", str(pi_root), "--platform", "pi").returncode == 0
    before = snapshot(pi_root)
    again = setup_sh("--device", "--root", str(pi_root), "--platform", "pi")
    assert again.returncode == 0, again.stderr
    assert snapshot(pi_root) == before  # same files, contents, modes and times: nothing rewritten
    assert "device: installed" not in again.stdout and "backed up" not in again.stdout
    assert "unchanged /boot/firmware/config.txt (includes edge.txt)" in again.stdout

    (pi_root / "etc/edge/config.toml").write_text("# the operator's settings\n")
    removed = setup_sh("--uninstall", "--root", str(pi_root))
    assert removed.returncode == 0, removed.stderr
    assert (pi_root / "etc/udev/rules.d/99-edge.rules").read_text() == ORIGINAL_RULE  # the backup is back
    assert (pi_root / "boot/firmware/config.txt").read_text() == ORIGINAL_CONFIG_TXT
    assert not list(pi_root.rglob("*.edge-backup"))
    for gone in ("etc/systemd/system/edge.service", "etc/systemd/system/edge-kiosk.service", "etc/pam.d/edge-kiosk",
                 "boot/firmware/edge.txt", "etc/edge/.install-manifest"):
        assert not (pi_root / gone).exists(), gone
    assert (pi_root / "etc/edge/config.toml").read_text() == "# the operator's settings\n"  # settings stay
    assert "nothing to uninstall" in setup_sh("--uninstall", "--root", str(pi_root)).stdout


def test_an_update_replaces_our_own_files_without_backing_them_up(tmp_path):
    root = tmp_path / "root"
    assert setup_sh("--device", "--root", str(root)).returncode == 0
    unit = root / "etc/systemd/system/edge.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=30", "WatchdogSec=60"))  # as an older version had it
    update = setup_sh("--device", "--root", str(root))
    assert update.returncode == 0 and "installed /etc/systemd/system/edge.service" in update.stdout
    assert "WatchdogSec=30" in unit.read_text() and not unit.with_name("edge.service.edge-backup").exists()
    assert setup_sh("--uninstall", "--root", str(root)).returncode == 0
    assert not unit.exists()  # ours, so removed rather than "restored" to an older edge version


def test_jetson_install_adds_the_drop_in_and_the_jetson_config(tmp_path):
    root = tmp_path / "root"
    result = setup_sh("--device", "--root", str(root), "--platform", "jetson")
    assert result.returncode == 0, result.stderr
    drop_in = root / "etc/systemd/system/edge.service.d/jetson.conf"
    assert drop_in.is_file() and mode(drop_in) == 0o644
    config = (root / "etc/edge/config.toml").read_text()
    assert 'source = "gst:nvarguscamerasrc' in config and "appsink" in config
    assert edge_cli("config", "check", str(root / "etc/edge/config.toml")).returncode == 0
    assert not (root / "boot/firmware/edge.txt").exists()  # Raspberry Pi settings only on a Pi
    verify = subprocess.run([systemd_analyze(), "verify", "--man=no", "--generators=no",
                             str(root / "etc/systemd/system/edge.service")],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "jetson.conf" not in verify.stderr, verify.stderr
    assert setup_sh("--uninstall", "--root", str(root)).returncode == 0
    assert not (root / "etc/systemd/system/edge.service.d").exists()


def test_installer_refuses_unknown_options_and_platforms(tmp_path):
    assert setup_sh("--device", "--root", str(tmp_path), "--platform", "mac").returncode != 0
    assert subprocess.run([str(PROJECT_ROOT / "scripts/install-device.sh"), "--bogus"],
                          capture_output=True).returncode == 2


# --- firmware_config ----------------------------------------------------------------------------------------

def test_config_txt_fragment_has_camera_and_display_settings():
    lines = (FIRMWARE / "boot/firmware/edge.txt").read_text().splitlines()
    assert "camera_auto_detect=1" in lines and "[all]" in lines
    for overlay in ("ov5647", "imx219", "imx708", "imx477"):
        assert f"#dtoverlay={overlay}" in lines, overlay
    for line in lines:  # the firmware reads comments only on lines of their own
        if line and not line.startswith("#"):
            assert "#" not in line and re.fullmatch(r"\[\w+\]|[a-z_0-9]+=\S+", line), line


def test_udev_rules_cover_cameras_and_both_coral_ids():
    rules = [line for line in (FIRMWARE / "etc/udev/rules.d/99-edge.rules").read_text().splitlines()
             if line and not line.startswith("#")]
    pair = r'[A-Z_]+(\{\w+\})?(==|!=|=|\+=|:=)"[^"]*"'
    for rule in rules:
        assert re.fullmatch(rf"{pair}(, {pair})*", rule), rule
    text = "\n".join(rules)
    assert 'SUBSYSTEM=="video4linux"' in text and 'SUBSYSTEM=="apex", GROUP="edge"' in text
    for vendor, product in (("1a6e", "089a"), ("18d1", "9302")):
        assert f'ATTR{{idVendor}}=="{vendor}", ATTR{{idProduct}}=="{product}", GROUP="edge"' in text


def test_the_commented_mqtt_example_is_a_valid_config(tmp_path):
    text = (FIRMWARE / "etc/edge/config.toml").read_text()
    assert "\n# [mqtt]\n" in text
    uncommented = re.sub(r"^# (\[|\w+ = )", r"\1", text, flags=re.MULTILINE)
    uncommented = uncommented.replace('"<base64 public key printed by `edge admin keygen`>"', "")
    (tmp_path / "config.toml").write_text(uncommented)
    settings = load_settings(tmp_path / "config.toml", environ={})
    assert settings.mqtt.enabled and settings.mqtt.tls.active and settings.mqtt.port == 8883


# --- edge doctor on the device ------------------------------------------------------------------------------

def as_nobody(function, *args):
    """Run ``function(*args)`` in a forked child whose real and effective ids are nobody's."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, send the pickled result, leave without cleanup
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            payload = pickle.dumps(function(*args))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            payload = pickle.dumps(RuntimeError(repr(exc)))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = pickle.loads(pipe.read())
    os.waitpid(pid, 0)
    if isinstance(result, RuntimeError):
        raise result
    return result


@pytest.fixture
def dev_folder():
    folder = Path(tempfile.mkdtemp(prefix="edge-dev-", dir="/tmp"))  # traversable by nobody
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")
def test_doctor_camera_permissions_name_the_nodes_the_user_cannot_open(dev_folder):
    for name, permissions in (("video0", 0o600), ("video1", 0o666)):  # video0: not granted to nobody's groups
        (dev_folder / name).touch()
        (dev_folder / name).chmod(permissions)
    denied = as_nobody(_camera_permissions, dev_folder)
    assert not denied.ok and f"{dev_folder}/video0" in denied.detail and "video1" not in denied.detail
    assert "user nobody cannot open" in denied.detail and "99-edge.rules" in denied.detail
    (dev_folder / "video0").chmod(0o666)
    assert as_nobody(_camera_permissions, dev_folder).ok
    nothing = _camera_permissions(dev_folder / "empty")
    assert not nothing.ok and nothing.detail.startswith("nothing to check: no ")  # not a PASS for an unmade check
    assert nothing.absent and not nothing.failed and nothing.line().startswith("[ -- ]")  # nor a fault


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")
def test_doctor_checks_the_coral_usb_node_permissions(dev_folder, tmp_path):
    sys_usb = dev_folder / "sys"
    device = sys_usb / "2-1"  # sysfs as the kernel lays out a Coral USB after its firmware is loaded
    device.mkdir(parents=True)
    for name, value in (("idVendor", "18d1"), ("idProduct", "9302"), ("busnum", "2"), ("devnum", "5")):
        (device / name).write_text(value + "\n")
    node = dev_folder / "bus/usb/002/005"
    node.parent.mkdir(parents=True)
    node.touch()
    node.chmod(0o664)  # the kernel's default: root read-write, others read-only
    for folder in (dev_folder / "bus", dev_folder / "bus/usb", node.parent):
        folder.chmod(0o755)
    check = as_nobody(_edgetpu_hardware, sys_usb, dev_folder)
    assert check.failed and "USB 18d1:9302" in check.detail and str(node) in check.detail  # there, unusable
    node.chmod(0o666)
    assert as_nobody(_edgetpu_hardware, sys_usb, dev_folder).ok
    none = _edgetpu_hardware(tmp_path / "none", tmp_path / "none")
    assert none.detail.startswith("no Coral USB") and none.absent and not none.failed  # optional, not here
    wanted = _edgetpu_hardware(tmp_path / "none", tmp_path / "none", wanted=True)  # backend = "coral"
    assert wanted.failed and wanted.line().startswith("[FAIL] edge tpu hardware")


def test_doctor_broker_check_makes_a_real_mqtt_connection(tmp_path):
    from mqtt_broker import Broker

    assert _broker(load_settings(None, environ={})) == []  # MQTT off: nothing to check
    broker = Broker(tmp_path / "broker").start()
    try:
        [reachable] = _broker(load_settings(None, {"mqtt": {"host": "127.0.0.1", "port": broker.port}}, environ={}))
    finally:
        broker.stop()
    assert reachable.ok and reachable.detail == f"127.0.0.1:{broker.port} accepted an MQTT session"
    [refused] = _broker(load_settings(None, {"mqtt": {"host": "127.0.0.1", "port": broker.port}}, environ={}))
    assert not refused.ok and f"cannot reach 127.0.0.1:{broker.port}" in refused.detail and not refused.required


def test_doctor_reads_the_unit_state_from_systemctl_show():
    running = unit_check("LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n"
                         "NRestarts=2\nResult=success\nStatusText=screening: camera picamera2 ok\n")
    assert running.ok and running.detail == ("active (running), enabled, 2 restarts; "
                                             "says: screening: camera picamera2 ok")
    failed = unit_check("LoadState=loaded\nActiveState=failed\nSubState=failed\nUnitFileState=enabled\n"
                        "NRestarts=5\nResult=watchdog\nStatusText=\n")
    assert not failed.ok and "last result watchdog" in failed.detail
    assert unit_check("LoadState=not-found\n").detail.startswith("not installed")


def test_jetson_and_raspberry_pi_are_told_by_the_device_tree(tmp_path):
    """Whether a missing backend or camera is a fault depends on the board: a Pi without picamera2 is
    broken, a PC without it is not; the same for a Jetson and its ONNX Runtime providers."""
    from edge.camera.auto import _has_csi_hardware
    from edge.doctor import is_jetson

    model = tmp_path / "model"
    assert not is_jetson(tmp_path / "no-release", model) and not _has_csi_hardware(model)  # no device tree
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert _has_csi_hardware(model) and not is_jetson(tmp_path / "no-release", model)
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert is_jetson(tmp_path / "no-release", model) and not _has_csi_hardware(model)
    (tmp_path / "nv_tegra_release").write_text("# R36 (release), REVISION: 3.0\n")
    assert is_jetson(tmp_path / "nv_tegra_release", tmp_path / "absent")
