"""The one settings schema: file < environment < flags, strict about unknown keys and bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
from conftest import run_edge

from edge.config import load_settings
from edge.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_state_dir_follows_xdg(tmp_path):
    settings = load_settings()
    assert settings.camera.source == "auto"
    assert settings.inference.backend == "auto"
    assert settings.inference.cpu.threads == 2
    assert settings.state_dir == tmp_path / "xdg-state" / "edge"


def test_state_dir_under_systemd_uses_state_directory(monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge")
    assert load_settings().state_dir == Path("/var/lib/edge")


def test_file_env_and_flags_in_rising_precedence(tmp_path, monkeypatch):
    config = write(tmp_path, '[camera]\nfps = 5\nwidth = 800\n[inference.cpu]\nthreads = 3\n')
    monkeypatch.setenv("EDGE_CAMERA__FPS", "10")
    settings = load_settings(config, {"inference": {"cpu": {"threads": 1}}})
    assert settings.camera.width == 800  # from the file
    assert settings.camera.fps == 10.0  # env beats file
    assert settings.inference.cpu.threads == 1  # flags beat both


def test_env_state_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_STATE_DIR", str(tmp_path / "s"))
    assert load_settings().state_dir == tmp_path / "s"


def test_unknown_key_in_file_names_the_key_path(tmp_path):
    config = write(tmp_path, "[camera]\nfsp = 5\n")
    with pytest.raises(ConfigError, match=r"camera\.fsp: unknown setting"):
        load_settings(config)


def test_unknown_env_variable_is_refused(monkeypatch):
    monkeypatch.setenv("EDGE_CAMERA__FSP", "5")
    with pytest.raises(ConfigError, match="EDGE_CAMERA__FSP"):
        load_settings()


def test_bad_value_names_key_and_reason(tmp_path):
    config = write(tmp_path, "[camera]\nfps = -1\n[inference]\nbackend = 'tpu'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "camera.fps" in message and "greater than 0" in message
    assert "inference.backend" in message and "'tpu'" in message


@pytest.mark.parametrize("source, ok", [
    ("auto", True), ("none", True), ("picamera2", True), ("opencv:0", True), ("opencv:/dev/video2", True),
    ("gst:videotestsrc ! appsink", True), ("file:/tmp/x", True),
    ("webcam", False), ("opencv:video0", False), ("opencv:", False), ("gst:", False), ("file:", False),
])
def test_camera_source_form_is_checked_at_load(source, ok):
    """A typo is a config error when the daemon starts, not a camera that stays "down" forever; the form
    accepted is exactly the one the camera code can build (whether the device exists is another matter)."""
    from edge.camera import open_source
    from edge.errors import CameraUnavailable

    if ok:
        assert load_settings(None, {"camera": {"source": source}}).camera.source == source
    else:
        with pytest.raises(ConfigError, match="unknown camera source"):
            load_settings(None, {"camera": {"source": source}})
    if source not in ("auto", "none"):  # auto probes hardware; none is a deliberate "no camera"
        try:
            open_source(source)
            built = True
        except CameraUnavailable:
            built = False
        assert built == ok, source


def test_bad_env_value(monkeypatch):
    monkeypatch.setenv("EDGE_INFERENCE__CPU__THREADS", "many")
    with pytest.raises(ConfigError, match=r"inference\.cpu\.threads \(environment variable EDGE_INFERENCE__CPU__THREADS\)"):
        load_settings()


def test_a_bad_value_names_where_it_came_from(tmp_path, monkeypatch):
    """The same bad port from the file names the file; from an EDGE_ variable (which wins over the file), the
    variable and not the file: an operator looking only in config.toml would not find it."""
    bad, good = tmp_path / "bad.toml", tmp_path / "good.toml"
    bad.write_text("[kiosk]\nport = 99999\n")
    good.write_text("[kiosk]\nport = 8080\n")
    with pytest.raises(ConfigError) as from_file:
        load_settings(bad)
    assert str(from_file.value).startswith(f"{bad}: kiosk.port: ") and "environment" not in str(from_file.value)
    monkeypatch.setenv("EDGE_KIOSK__PORT", "99999")
    with pytest.raises(ConfigError) as from_env:
        load_settings(good)
    assert str(from_env.value).startswith("kiosk.port (environment variable EDGE_KIOSK__PORT): ")  # not the file
    monkeypatch.delenv("EDGE_KIOSK__PORT")
    # a command-line flag wins over both: its bad value is neither the variable's nor the file's
    monkeypatch.setenv("EDGE_CAMERA__SOURCE", "auto")
    with pytest.raises(ConfigError) as from_flag:
        load_settings(good, {"camera": {"source": "bogus:x"}})
    assert str(from_flag.value).startswith("camera.source: ") and "EDGE_CAMERA__SOURCE" not in str(from_flag.value)
    # a section variable (JSON) is named only for the keys it holds
    monkeypatch.setenv("EDGE_KIOSK", '{"host": "127.0.0.1"}')
    with pytest.raises(ConfigError) as section:
        load_settings(bad)
    assert str(section.value).startswith(f"{bad}: kiosk.port: ") and "EDGE_KIOSK" not in str(section.value)
    monkeypatch.setenv("EDGE_KIOSK", '{"port": 99999}')
    with pytest.raises(ConfigError, match=r"^kiosk\.port \(environment variable EDGE_KIOSK\): "):
        load_settings(good)


def test_env_list_that_is_not_json_is_a_config_error(monkeypatch):
    """A list setting from the environment must be JSON; a bare value is refused with the way to write it."""
    monkeypatch.setenv("EDGE_MQTT__COMMANDS__ADMIN_KEYS", "gbBJY/Iq3Gwh+SCecFc24i5v7RyOu8AJTulsQIw+dQk=")
    with pytest.raises(ConfigError, match=r"environment: .*written as JSON"):
        load_settings()
    monkeypatch.setenv("EDGE_MQTT__COMMANDS__ADMIN_KEYS", '["gbBJY/Iq3Gwh+SCecFc24i5v7RyOu8AJTulsQIw+dQk="]')
    assert load_settings().mqtt.commands.admin_keys == ["gbBJY/Iq3Gwh+SCecFc24i5v7RyOu8AJTulsQIw+dQk="]


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[camera\n"))
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('camera.source = "caméra"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not valid TOML: not UTF-8 text"):
        load_settings(latin1)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_config_inputs_a_review_found_mishandled(tmp_path, monkeypatch):
    # /dev/zero as the config file grew to gigabytes; a deeply nested array was a RecursionError traceback
    with pytest.raises(ConfigError, match="/dev/zero: not a regular file"):
        load_settings(Path("/dev/zero"))
    with pytest.raises(ConfigError, match="not valid TOML: nested too deeply"):
        load_settings(write(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n"))
    # a limit past 2**63 passed `config check` and made every upload a 500
    with pytest.raises(ConfigError, match="limits.max_bytes"):
        load_settings(write(tmp_path, "[limits]\nmax_bytes = 9223372036854775807\n"))
    # an empty state_dir became "." and the patient history was written wherever edge was started
    with pytest.raises(ConfigError, match="state_dir is empty"):
        load_settings(write(tmp_path, 'state_dir = ""\n'))
    monkeypatch.setenv("EDGE_STATE_DIR", "")
    with pytest.raises(ConfigError, match="EDGE_STATE_DIR.*state_dir is empty"):
        load_settings(None)


def test_edge_config_env_selects_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_CONFIG", str(write(tmp_path, "log_level = 'DEBUG'\n")))
    assert load_settings().log_level == "DEBUG"


def test_cli_show_round_trips_through_check(tmp_path):
    shown = run_edge("config", "show", "--threads", "3", "--state-dir", str(tmp_path / "st"))
    assert shown.returncode == 0, shown.stderr
    parsed = tomllib.loads(shown.stdout)
    assert parsed["inference"]["cpu"]["threads"] == 3
    saved = write(tmp_path, shown.stdout)
    checked = run_edge("config", "check", str(saved))
    assert checked.returncode == 0 and "ok" in checked.stdout


def test_cli_check_reports_one_clear_line(tmp_path):
    result = run_edge("config", "check", str(write(tmp_path, "[kiosks]\nport = 1\n")))
    assert result.returncode == 2
    assert "kiosks: unknown setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_schema_is_json_schema_of_every_section():
    result = run_edge("config", "schema")
    schema = json.loads(result.stdout)
    assert {"camera", "quality", "inference", "limits", "state_dir"} <= set(schema["properties"])
