"""Signed command envelopes: parse, check and either accept a ``Command`` or reject it with a reason.

An envelope is a JSON object::

    {"command": "status", "args": {}, "target": "<device id>" | "fleet", "nonce": "…",
     "issued_at": 1700000000, "expires_at": 1700000300, "key_id": "…", "signature": "<base64>"}

Checks run cheapest first and every failure is a ``CommandRejected`` with a reason for ``cmd/reply``:
size, JSON, shape and types, signature, target, validity window, and last the nonce (recorded only for a
command that passed everything else, so a forged command cannot burn a genuine nonce). A rejected
command changes nothing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.errors import EdgeError
from edge.mqtt.nonces import NonceStore
from edge.mqtt.signing import SignatureError, verify_envelope

MAX_COMMAND_BYTES = 64 * 1024
# The largest mqtt.commands.clock_skew_s the settings accept. A nonce is kept until its command has expired
# by this much: an administrator may raise the skew while the device runs, and an old command must not become
# valid again after its nonce was forgotten.
MAX_CLOCK_SKEW_S = 86400.0
FLEET = "fleet"
COMMANDS = ("status", "get_config", "set_config", "model_update", "restart", "purge_local_data", "set_log_level")
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
FIELDS: dict[str, type] = {
    "command": str, "args": dict, "target": str, "nonce": str, "issued_at": int, "expires_at": int,
}
OPTIONAL_FIELDS: dict[str, type] = {"key_id": str, "signature": str}


class CommandRejected(EdgeError):
    """A command that is not executed, with the reason sent back on ``cmd/reply``."""

    def __init__(self, reason: str, nonce: str | None = None, command: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.nonce, self.command = reason, nonce, command


class NotForThisDevice(CommandRejected):
    """Signed for another device: on the fleet topic this is ignored, on our own topic it is rejected."""


@dataclass(frozen=True)
class Command:
    command: str
    args: dict[str, Any]
    target: str
    nonce: str
    issued_at: int
    expires_at: int
    key_id: str


class CommandVerifier:
    """Turns raw bytes from ``cmd`` into a verified ``Command`` for this device."""

    def __init__(self, device_id: str, keys: Mapping[str, Ed25519PublicKey], nonces: NonceStore, *,
                 clock_skew_s: float, max_lifetime_s: float, clock: Callable[[], float] = time.time) -> None:
        self.device_id = device_id
        self.keys = dict(keys)
        self.nonces = nonces
        self.clock_skew_s = clock_skew_s
        self.max_lifetime_s = max_lifetime_s
        self.clock = clock

    def verify(self, raw: bytes) -> Command:
        envelope = parse_envelope(raw)
        nonce, name = envelope["nonce"], envelope["command"]
        try:
            kid = verify_envelope(envelope, self.keys)
        except SignatureError as exc:
            raise CommandRejected(str(exc), nonce, name) from None
        if envelope["target"] not in (self.device_id, FLEET):
            raise NotForThisDevice("wrong target: this command is for another device", nonce, name)
        self._check_window(envelope, nonce, name)
        if name not in COMMANDS:
            raise CommandRejected(f"unknown command {name!r}: one of {', '.join(COMMANDS)}", nonce, name)
        forget_after = envelope["expires_at"] + max(self.clock_skew_s, MAX_CLOCK_SKEW_S)
        if not self.nonces.claim(nonce, forget_after, self.clock()):
            raise CommandRejected("replayed: this nonce was already used", nonce, name)
        return Command(name, envelope["args"], envelope["target"], nonce, envelope["issued_at"],
                       envelope["expires_at"], kid)

    def _check_window(self, envelope: dict[str, Any], nonce: str, name: str) -> None:
        now, skew = self.clock(), self.clock_skew_s
        issued, expires = envelope["issued_at"], envelope["expires_at"]
        if expires <= issued:
            raise CommandRejected("malformed: expires_at must be after issued_at", nonce, name)
        if expires - issued > self.max_lifetime_s:
            raise CommandRejected(f"lifetime {expires - issued} s exceeds the device's limit of "
                                  f"{self.max_lifetime_s:g} s (mqtt.commands.max_lifetime_s)", nonce, name)
        if issued > now + skew:
            raise CommandRejected(f"not yet valid: issued_at is {issued - now:.0f} s in the future "
                                  f"(allowed clock skew {skew:g} s)", nonce, name)
        if expires < now - skew:
            raise CommandRejected(f"expired {now - expires:.0f} s ago", nonce, name)


def parse_envelope(raw: bytes) -> dict[str, Any]:
    """The envelope as a dict with every field of the right type, or ``CommandRejected('malformed: …')``."""
    if len(raw) > MAX_COMMAND_BYTES:
        raise CommandRejected(f"too large: {len(raw)} bytes (limit {MAX_COMMAND_BYTES})")
    try:
        envelope = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, or a number longer than Python will convert
        raise CommandRejected("malformed: not UTF-8 JSON") from None
    if not isinstance(envelope, dict):
        raise CommandRejected("malformed: the envelope must be a JSON object")
    nonce = envelope.get("nonce")
    nonce = nonce if isinstance(nonce, str) and NONCE_PATTERN.match(nonce) else None  # echoed only if sane
    command = envelope.get("command") if isinstance(envelope.get("command"), str) else None
    for field, kind in {**FIELDS, **OPTIONAL_FIELDS}.items():
        if field not in envelope:
            if field in FIELDS:
                raise CommandRejected(f"malformed: missing field {field!r}", nonce)
            continue
        value = envelope[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CommandRejected(f"malformed: field {field!r} must be {_kind_name(kind)}", nonce)
    stray = sorted(set(envelope) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if stray:
        raise CommandRejected(f"malformed: unknown field(s) {', '.join(map(repr, stray))}", nonce)
    if nonce is None:
        raise CommandRejected("malformed: nonce must be 16-128 characters of A-Z a-z 0-9 _ -")
    if command is not None and len(command) > 64:
        raise CommandRejected("malformed: command name too long", nonce)
    return envelope


KIND_NAMES: dict[type, str] = {str: "a string", dict: "an object", int: "an integer (unix seconds)"}


def _kind_name(kind: type) -> str:
    return KIND_NAMES.get(kind, kind.__name__)


def rejection_reply(exc: CommandRejected, device_id: str) -> dict[str, Any]:
    reply: dict[str, Any] = {"ok": False, "error": exc.reason, "device_id": device_id}
    if exc.nonce is not None:
        reply["nonce"] = exc.nonce
    if exc.command in COMMANDS:  # never reflect arbitrary text from an unverified message
        reply["command"] = exc.command
    return reply
