"""Settings changed by an administrator (``set_config``): validated, persisted, and loaded at start-up.

Changes are kept in ``state_dir/remote-config.toml``, an overlay deep-merged over the effective settings
(file < environment < flags < overlay: the overlay is the administrator's latest decision). Every change
is validated by the one settings schema before it is written, so the file only ever holds values that
load; the write is atomic, so a power cut leaves the old or the new overlay. Deleting the file returns the
device to its local configuration.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from edge.config import Settings, is_secret_key, is_setting_path, load_settings
from edge.errors import ConfigError

log = logging.getLogger("edge.mqtt")
OVERLAY_FILE = "remote-config.toml"
# What a remote administrator may change (a key, or a section with everything in it): tuning that cannot
# send data anywhere new, change who administers the device, or load other code. Everything else is decided
# on the device: the broker, its credentials and topics, the camera source (a GStreamer pipeline can write
# anywhere), every file path, the kiosk's address, health-worker history, the admin keys.
REMOTE_KEYS = (
    "log_level",
    "camera.width", "camera.height", "camera.fps", "camera.loop",
    "camera.reopen_backoff_initial_s", "camera.reopen_backoff_max_s",
    "quality", "limits", "pipeline.auto_classify",
    "inference.backend", "inference.cpu.threads", "inference.coral.device", "inference.jetson.providers",
    "kiosk.enabled", "kiosk.language", "kiosk.idle_timeout_s", "kiosk.preview_fps", "kiosk.max_chat_chars",
    "assistant.enabled", "assistant.n_ctx", "assistant.threads", "assistant.max_tokens",
    "assistant.temperature", "assistant.timeout_s", "assistant.llm_in_reports", "assistant.llm_languages",
    "mqtt.keepalive_s", "mqtt.reconnect_min_s", "mqtt.reconnect_max_s", "mqtt.telemetry_interval_s",
    "mqtt.outbox_cap", "mqtt.max_inflight", "mqtt.home_assistant", "mqtt.discovery_prefix", "mqtt.results",
    "mqtt.commands.clock_skew_s", "mqtt.commands.max_lifetime_s",
)
# Applied by the running daemon without a restart; everything else is persisted and applies after one.
LIVE_KEYS = ("log_level", "mqtt.telemetry_interval_s", "mqtt.commands.clock_skew_s", "mqtt.commands.max_lifetime_s",
             "mqtt.results.include_age_band", "mqtt.results.include_body_site", "mqtt.results.hold_until_minute_end")
REDACTED = "<redacted>"
URL_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")  # rtsp://user:password@host


def overlay_path(state_dir: Path) -> Path:
    return Path(state_dir) / OVERLAY_FILE


def read_overlay(state_dir: Path) -> dict[str, Any]:
    path = overlay_path(state_dir)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.error("remote settings %s unreadable (%s): ignored", path, exc)
        return {}


def remote_settable(path: str) -> bool:
    return any(path == key or path.startswith(key + ".") for key in REMOTE_KEYS)


def with_overlay(settings: Settings) -> Settings:
    """``settings`` with the persisted overlay applied. A bad overlay is logged and ignored: the device
    must keep screening with its local configuration rather than refuse to start. Keys that may not be set
    remotely (an overlay written by an older version) are dropped with an error in the log."""
    overlay = read_overlay(settings.state_dir)
    refused = [path for path in leaf_paths(overlay) if not remote_settable(path)]
    if refused:
        log.error("remote settings %s: ignoring %s (only the local configuration can set them)",
                  overlay_path(settings.state_dir), ", ".join(refused))
        overlay = _without(overlay, refused)
    if not overlay:
        return settings
    try:
        return apply(settings, overlay)
    except ConfigError as exc:
        log.error("remote settings %s no longer valid (%s): ignored", overlay_path(settings.state_dir), exc)
        return settings


def expand_dotted(values: dict[str, Any]) -> dict[str, Any]:
    """``{"mqtt.port": 1}`` -> ``{"mqtt": {"port": 1}}``; nested dicts are kept as they are."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: conflicts with another value")
        node[leaf] = merge(node[leaf], value) if isinstance(node.get(leaf), dict) and isinstance(value, dict) \
            else value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def leaf_paths(values: dict[str, Any], parent: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{parent}{key}"
        paths.extend(leaf_paths(value, path + ".") if isinstance(value, dict) and value else [path])
    return paths


def check_update(values: Any) -> dict[str, Any]:
    """The update as nested values, or ``ConfigError`` naming the key that cannot be set remotely."""
    if not isinstance(values, dict) or not values:
        raise ConfigError("set_config needs a non-empty object of settings, e.g. {\"log_level\": \"DEBUG\"}")
    nested = expand_dotted(values)
    for path in leaf_paths(nested):
        if not is_setting_path(Settings, path.split(".")):
            raise ConfigError(f"{path}: unknown setting")
        if not remote_settable(path):
            raise ConfigError(f"{path}: can only be changed in the device's local configuration")
        if _contains_none(_lookup(nested, path)):
            raise ConfigError(f"{path}: null is not a setting value")
    return nested


def apply(settings: Settings, update: dict[str, Any]) -> Settings:
    """New settings with ``update`` merged in, validated by the settings schema (``ConfigError`` names the
    key path). ``settings`` itself is not changed."""
    # Python-mode dump keeps SecretStr values as they are (a JSON dump would turn them into asterisks).
    return load_settings(None, merge(settings.model_dump(), update), environ={})


def persist(state_dir: Path, update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into the overlay file atomically and return the whole overlay."""
    overlay = merge(read_overlay(state_dir), update)
    path = overlay_path(state_dir)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(tomli_w.dumps(overlay).encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(partial, 0o600)  # the administrator's settings are nobody else's business
    os.replace(partial, path)
    return overlay


def changed_paths(old: Settings, new: Settings) -> list[str]:
    before, after = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    changed = {path for path in after if before.get(path) != after[path]}
    if _password(old) != _password(new):  # the JSON dump shows every SecretStr as the same asterisks
        changed.add("mqtt.password")
    return sorted(changed)


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings for ``get_config``: every secret replaced by ``<redacted>``."""
    return _redact(settings.model_dump(mode="json"))


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if is_secret_key(key) and value is not None:
        return REDACTED
    if isinstance(value, str):  # e.g. a camera pipeline with rtsp://user:password@host in it
        return URL_USERINFO.sub(rf"\1{REDACTED}@", value)
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


def _without(values: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """A copy of nested ``values`` without the given leaf paths (and without sections left empty)."""
    kept: dict[str, Any] = {}
    for key, value in values.items():
        inner = [path[len(key) + 1:] for path in paths if path.startswith(key + ".")]
        if key in paths:
            continue
        if isinstance(value, dict) and inner:
            value = _without(value, inner)
            if not value:
                continue
        kept[key] = copy.deepcopy(value)
    return kept


def _flatten(values: dict[str, Any], parent: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{parent}{key}."))
        else:
            flat[f"{parent}{key}"] = value
    return flat


def _password(settings: Settings) -> str | None:
    secret = settings.mqtt.password
    return secret.get_secret_value() if secret is not None else None


def _lookup(values: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def _contains_none(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_contains_none(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_none(v) for v in value)
    return False
