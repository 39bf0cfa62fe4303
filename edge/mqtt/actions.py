"""What each verified command does. Only reached after ``CommandVerifier`` accepted the envelope.

The actions act on the device through the ``Runtime`` protocol (implemented by the MQTT service, with
hooks from the composition root), so they never reach into the pipeline, kiosk or store themselves.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge.config import Settings
from edge.errors import ConfigError, EdgeError
from edge.mqtt import remote_config
from edge.mqtt.commands import Command, CommandRejected, CommandVerifier, NotForThisDevice, rejection_reply
from edge.updates import InstalledPack, UpdateFailed

log = logging.getLogger("edge.mqtt")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MODEL_UPDATE_ARGS, MODEL_UPDATE_OPTIONAL = ("source", "sha256", "manifest_signature"), ("manifest_key_id",)
HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class CommandFailed(EdgeError):
    """A verified command that could not be carried out; the reason goes back on ``cmd/reply``."""


class Runtime(Protocol):
    settings: Settings
    device_id: str

    def status(self) -> dict[str, Any]: ...

    def apply_live(self, settings: Settings, changed: list[str]) -> None: ...

    def purge_local_data(self) -> dict[str, int]: ...

    def schedule_restart(self) -> None: ...

    @property
    def restart_pending(self) -> bool: ...

    def install_model(self, source: str, sha256: str, manifest_signature: str,
                      manifest_key_id: str | None) -> InstalledPack: ...


def respond(raw: bytes, *, verifier: CommandVerifier, runtime: Runtime, fleet: bool) -> dict[str, Any] | None:
    """The reply to one message from ``cmd`` (or the fleet topic), after carrying it out if it is valid.
    None when there is nothing to say: a fleet command addressed to another device."""
    try:
        command = verifier.verify(raw)
    except NotForThisDevice as exc:
        if fleet:
            log.debug("fleet command for another device ignored")
            return None
        log.warning("command rejected: %s", exc.reason)
        return rejection_reply(exc, runtime.device_id)
    except CommandRejected as exc:
        log.warning("command rejected: %s", exc.reason)
        return rejection_reply(exc, runtime.device_id)
    except Exception:  # an unforeseen message must not escape into paho, which would drop the connection
        log.exception("command could not be checked")
        return rejection_reply(CommandRejected("malformed: the device could not check this command"),
                               runtime.device_id)
    reply: dict[str, Any] = {"nonce": command.nonce, "command": command.command, "device_id": runtime.device_id}
    log.info("command %s accepted (admin key %s)", command.command, command.key_id)
    try:
        return {**reply, "ok": True, "result": execute(command, runtime)}
    except CommandFailed as exc:
        log.warning("command %s failed: %s", command.command, exc)
        return {**reply, "ok": False, "error": str(exc)}
    except Exception:  # a bug in an action must not kill the command thread; the traceback is logged
        log.exception("command %s crashed", command.command)
        return {**reply, "ok": False, "error": "internal error: see the device's log"}


def execute(command: Command, runtime: Runtime) -> dict[str, Any]:
    """The ``result`` of the reply for ``command``; ``CommandFailed`` with a reason otherwise."""
    action = ACTIONS[command.command]
    return action(command.args, runtime)


def _no_args(args: dict[str, Any], name: str) -> None:
    if args:
        raise CommandFailed(f"{name} takes no arguments (got {', '.join(sorted(args))})")


def status(args: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    _no_args(args, "status")
    return runtime.status()


def get_config(args: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    _no_args(args, "get_config")
    return {"settings": remote_config.redacted(runtime.settings)}


def set_config(args: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Validate against the whole schema, persist, then apply what can be applied while running."""
    try:
        update = remote_config.check_update(args)
        new = remote_config.apply(runtime.settings, update)
    except ConfigError as exc:
        raise CommandFailed(f"invalid setting: {exc}") from None
    changed = remote_config.changed_paths(runtime.settings, new)
    remote_config.persist(runtime.settings.state_dir, update)
    live = [path for path in changed if path in remote_config.LIVE_KEYS]
    later = [path for path in changed if path not in remote_config.LIVE_KEYS]
    runtime.apply_live(new, live)
    log.info("settings changed by an administrator: %s", ", ".join(changed) or "(no change)")
    return {"changed": changed, "applied": live, "applies_after_restart": later}


def set_log_level(args: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    level = args.get("level")
    if set(args) != {"level"} or level not in LOG_LEVELS:
        raise CommandFailed(f"set_log_level needs {{\"level\": one of {', '.join(LOG_LEVELS)}}}")
    set_process_log_level(level)
    log.warning("log level set to %s by an administrator (not persisted: use set_config log_level)", level)
    return {"level": level, "persisted": False}


def restart(args: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    _no_args(args, "restart")
    runtime.schedule_restart()
    return {"restarting": True}


def purge_local_data(args: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    _no_args(args, "purge_local_data")
    return {"purged": runtime.purge_local_data()}


def model_update(args: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Install a signed pack (``edge.updates``), reply, then restart into it. Runs on the command thread: a
    slow download holds other commands back (for at most the download timeout, plus 10 s if the source goes
    quiet), never the connection."""
    source, sha256, signature, key_id = _model_update_args(args)
    if runtime.restart_pending:  # the restart would cut this install short, and its reply with it
        raise CommandFailed("model update refused (busy): the device is about to restart for an earlier command; "
                            "send it again once the device is back; the current model is unchanged")
    try:
        installed = runtime.install_model(source, sha256, signature, key_id)
    except UpdateFailed as exc:
        raise CommandFailed(f"model update refused ({exc.step}): {exc}; the current model is unchanged") from None
    # Already running this very pack (a repeated command): nothing to restart for.
    restarting = Path(runtime.settings.inference.model_dir).resolve() != installed.path.resolve()
    if restarting:
        runtime.schedule_restart()
    return {"name": installed.name, "version": installed.version, "sha256": installed.archive_sha256,
            "model_sha256": installed.model_sha256, "previous": installed.previous,
            "already_installed": installed.already_current, "restarting": restarting}


def _model_update_args(args: dict[str, Any]) -> tuple[str, str, str, str | None]:
    usage = ("model_update needs {\"source\": absolute path, file:// or http(s):// URL of the .tar.gz, "
             "\"sha256\": its 64 hex digits, \"manifest_signature\": base64}, optionally \"manifest_key_id\" "
             "(`edge admin pack-update` prints them)")
    missing = [name for name in MODEL_UPDATE_ARGS if name not in args]
    stray = sorted(set(args) - set(MODEL_UPDATE_ARGS) - set(MODEL_UPDATE_OPTIONAL))
    if missing or stray:
        problem = f"missing {', '.join(missing)}" if missing else f"unknown argument(s) {', '.join(stray)}"
        raise CommandFailed(f"{problem}: {usage}")
    source, sha256, signature = args["source"], args["sha256"], args["manifest_signature"]
    key_id = args.get("manifest_key_id")
    if not isinstance(source, str) or not 0 < len(source) <= 2048:
        raise CommandFailed(f"source must be a non-empty string: {usage}")
    if not isinstance(sha256, str) or not HEX64.match(sha256):
        raise CommandFailed("sha256 must be the archive's sha256 as 64 hex digits")
    try:
        if not isinstance(signature, str) or len(base64.b64decode(signature, validate=True)) != 64:
            raise ValueError
    except (binascii.Error, ValueError):
        raise CommandFailed("manifest_signature must be the base64 of a 64-byte Ed25519 signature") from None
    if key_id is not None and (not isinstance(key_id, str) or not re.fullmatch(r"[0-9a-f]{16}", key_id)):
        raise CommandFailed("manifest_key_id must be the 16 hex digits `edge admin keygen` printed")
    return source, sha256.lower(), signature, key_id


def set_process_log_level(level: str) -> None:
    logging.getLogger().setLevel(level)


ACTIONS: dict[str, Callable[[dict[str, Any], Runtime], dict[str, Any]]] = {
    "status": status, "get_config": get_config, "set_config": set_config, "set_log_level": set_log_level,
    "restart": restart, "purge_local_data": purge_local_data, "model_update": model_update,
}
