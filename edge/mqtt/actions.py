"""What each verified command does. Only reached after ``CommandVerifier`` accepted the envelope.

The actions act on the device through the ``Runtime`` protocol (implemented by the MQTT service, with
hooks from the composition root), so they never reach into the pipeline, kiosk or store themselves.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from edge.config import Settings
from edge.errors import ConfigError, EdgeError
from edge.mqtt import remote_config
from edge.mqtt.commands import Command, CommandRejected, CommandVerifier, NotForThisDevice, rejection_reply

log = logging.getLogger("edge.mqtt")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CommandFailed(EdgeError):
    """A verified command that could not be carried out; the reason goes back on ``cmd/reply``."""


class Runtime(Protocol):
    settings: Settings
    device_id: str

    def status(self) -> dict[str, Any]: ...

    def apply_live(self, settings: Settings, changed: list[str]) -> None: ...

    def purge_local_data(self) -> dict[str, int]: ...

    def schedule_restart(self) -> None: ...


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
    reply: dict[str, Any] = {"nonce": command.nonce, "command": command.command, "device_id": runtime.device_id}
    log.info("command %s accepted (admin key %s)", command.command, command.key_id)
    try:
        return {**reply, "ok": True, "result": execute(command, runtime)}
    except CommandFailed as exc:
        log.warning("command %s failed: %s", command.command, exc)
        return {**reply, "ok": False, "error": str(exc)}
    except Exception:  # a bug in an action must not kill the MQTT thread; the traceback is logged
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
    raise CommandFailed("model_update is not implemented yet on this device: the current model is unchanged")


def set_process_log_level(level: str) -> None:
    logging.getLogger().setLevel(level)


ACTIONS: dict[str, Callable[[dict[str, Any], Runtime], dict[str, Any]]] = {
    "status": status, "get_config": get_config, "set_config": set_config, "set_log_level": set_log_level,
    "restart": restart, "purge_local_data": purge_local_data, "model_update": model_update,
}
