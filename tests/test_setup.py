"""setup.sh and the device installer: syntax, idempotence, and what --device installs into a temporary root."""

from __future__ import annotations

import subprocess

from edge.paths import PROJECT_ROOT


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300, **kwargs)


def test_scripts_parse():
    for script in ("setup.sh", "scripts/install-device.sh", ".ci/run"):
        assert run("bash", "-n", script).returncode == 0, script


def test_setup_rerun_is_a_no_op():
    """Once `./setup.sh --dev` has run (as before this suite), running it again finds everything in place."""
    assert run("./setup.sh", "--dev").returncode == 0
    result = run("./setup.sh", "--dev")
    assert result.returncode == 0, result.stderr
    assert "Debian packages: nothing to install" in result.stdout
    assert "python package .[assistant,dev]: up to date" in result.stdout


def test_device_install_into_a_temporary_root(tmp_path):
    root = tmp_path / "root"
    first = run("scripts/install-device.sh", "--root", str(root))
    assert first.returncode == 0, first.stderr
    config = root / "etc/edge/config.toml"
    assert config.is_file() and (root / "var/lib/edge").is_dir()
    config.write_text("# operator's edits\n")
    second = run("scripts/install-device.sh", "--root", str(root))
    assert second.returncode == 0
    assert config.read_text() == "# operator's edits\n"  # never overwrites the operator's config
    assert "kept existing /etc/edge/config.toml" in second.stdout
    # Units and udev rules too (modes, backups, --uninstall, Pi and Jetson files: tests/test_device_install.py).
    assert (root / "etc/systemd/system/edge.service").is_file() and (root / "etc/udev/rules.d/99-edge.rules").is_file()
    assert "nothing changed: every file was already in place" in second.stdout


def test_shipped_device_config_is_valid():
    result = run(str(PROJECT_ROOT / ".venv/bin/edge"), "config", "check",
                 str(PROJECT_ROOT / "firmware_config/etc/edge/config.toml"))
    assert result.returncode == 0, result.stderr
