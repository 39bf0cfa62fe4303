"""The administrator's side: make a key pair, sign and send a command, watch the fleet.

These functions return data; ``edge admin`` in ``edge.cli`` prints it. They use the same settings
(``mqtt.host``, TLS, credentials, topic layout) as the devices, from the admin machine's own config.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config import MqttSettings
from edge.errors import EdgeError
from edge.mqtt.commands import FLEET
from edge.mqtt.connection import check_files, make_client
from edge.mqtt.signing import key_id, public_key_b64, sign_envelope, write_private_key
from edge.mqtt.topics import Topics, all_devices_prefix, device_of

CONNECT_TIMEOUT_S = 10.0


def keygen(path: Path) -> tuple[str, str]:
    """Write a new private key (PEM, 0600) to ``path``; return (public key for admin_keys, key id)."""
    private = Ed25519PrivateKey.generate()
    write_private_key(path, private)
    return public_key_b64(private.public_key()), key_id(private.public_key())


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` arguments; a VALUE that parses as JSON is used as such (``5``, ``true``), else a string."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise EdgeError(f"argument {pair!r}: expected KEY=VALUE")
        try:
            args[key] = json.loads(text)
        except json.JSONDecodeError:
            args[key] = text
    return args


def build_envelope(command: str, args: dict[str, Any], target: str, ttl_s: float,
                   now: float | None = None) -> dict[str, Any]:
    issued = int(time.time() if now is None else now)
    return {"command": command, "args": args, "target": target, "nonce": secrets.token_urlsafe(24),
            "issued_at": issued, "expires_at": issued + max(1, int(ttl_s))}


class AdminSession:
    """A short-lived admin connection that hands received messages to a queue (paho's own thread)."""

    def __init__(self, settings: MqttSettings) -> None:
        if not settings.enabled:
            raise EdgeError("mqtt.host is not set: give --host or a config with [mqtt] host")
        check_files(settings)
        self.settings = settings
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connected, self._subscribed = threading.Event(), threading.Event()
        self._refused: str | None = None
        self.client = make_client(settings, f"edge-admin-{secrets.token_hex(4)}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
        self._connected.set()

    def __enter__(self) -> "AdminSession":
        try:
            self.client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        except (OSError, ValueError) as exc:
            raise EdgeError(f"cannot connect to {self.settings.host}:{self.settings.port}: {exc}") from None
        self.client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S) or self._refused:
            self.close()
            raise EdgeError(f"broker {self.settings.host}:{self.settings.port} did not accept the connection"
                            f"{': ' + self._refused if self._refused else ''}")
        return self

    def subscribe(self, *filters: str) -> None:
        self._subscribed.clear()
        self.client.subscribe([(f, 1) for f in filters])
        if not self._subscribed.wait(CONNECT_TIMEOUT_S):
            raise EdgeError("the broker did not confirm the subscription")

    def receive(self, until: float) -> Iterator[mqtt.MQTTMessage]:
        while (left := until - time.monotonic()) > 0:
            try:
                yield self.messages.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __exit__(self, *exc) -> None:
        self.close()


def send(settings: MqttSettings, private_key: Ed25519PrivateKey, command: str, args: dict[str, Any], *,
         device: str | None, timeout_s: float, ttl_s: float,
         on_reply: Callable[[dict[str, Any]], None] = lambda reply: None) -> list[dict[str, Any]]:
    """Sign and publish ``command`` to ``device`` (or the fleet when None); collect the replies carrying its
    nonce until ``timeout_s`` (a single device: until its reply)."""
    template = settings.topic_prefix
    envelope = sign_envelope(build_envelope(command, args, device or FLEET, ttl_s), private_key)
    if device is not None:
        topics = Topics.for_device(template, device, settings.fleet_topic)
        cmd_topic, reply_filter = topics.cmd, topics.cmd_reply
    else:
        cmd_topic, reply_filter = settings.fleet_topic, f"{all_devices_prefix(template)}/cmd/reply"
    replies: list[dict[str, Any]] = []
    with AdminSession(settings) as session:
        session.subscribe(reply_filter)
        session.client.publish(cmd_topic, json.dumps(envelope), qos=1).wait_for_publish(CONNECT_TIMEOUT_S)
        for message in session.receive(time.monotonic() + timeout_s):
            try:
                reply = json.loads(message.payload)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(reply, dict) or reply.get("nonce") != envelope["nonce"]:
                continue
            replies.append(reply)
            on_reply(reply)
            if device is not None:
                break
    return replies


@dataclass
class DeviceRow:
    device_id: str
    status: str = "?"
    model: str = "?"
    backend: str = "?"
    queue_depth: int | None = None
    fps: float | None = None
    cpu_temp_c: float | None = None
    last_seen: str = "?"
    extra: dict[str, Any] = field(default_factory=dict)


def watch(settings: MqttSettings, seconds: float | None,
          on_change: Callable[[dict[str, DeviceRow]], None] = lambda rows: None) -> dict[str, DeviceRow]:
    """Follow every device's ``status`` and ``telemetry`` for ``seconds`` (None: until interrupted)."""
    template = settings.topic_prefix
    base = all_devices_prefix(template)
    rows: dict[str, DeviceRow] = {}
    with AdminSession(settings) as session:
        session.subscribe(f"{base}/status", f"{base}/telemetry")
        until = time.monotonic() + (seconds if seconds is not None else float("inf"))
        for message in session.receive(until):
            device = device_of(template, message.topic) or template
            row = rows.setdefault(device, DeviceRow(device))
            if _update_row(row, message):
                on_change(rows)
    return rows


def _update_row(row: DeviceRow, message: mqtt.MQTTMessage) -> bool:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if message.topic.endswith("/status"):
        row.status = message.payload.decode("utf-8", "replace")[:16]
        if not message.retain:
            row.last_seen = now
        return True
    try:
        telemetry = json.loads(message.payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(telemetry, dict):
        return False
    model = telemetry.get("model") or {}
    row.model = f"{model.get('name') or '?'} {model.get('version') or ''}".strip()
    row.backend = str(telemetry.get("backend") or "?")
    row.queue_depth, row.fps = telemetry.get("queue_depth"), telemetry.get("fps")
    row.cpu_temp_c = telemetry.get("cpu_temp_c")
    row.last_seen = str(telemetry.get("time") or now) if message.retain else now
    return True


def render_table(rows: dict[str, DeviceRow]) -> str:
    header = ("DEVICE", "STATUS", "MODEL", "BACKEND", "QUEUE", "FPS", "TEMP", "LAST SEEN (UTC)")
    lines = [header] + [
        (r.device_id, r.status, r.model, r.backend, _dash(r.queue_depth), _dash(r.fps),
         _dash(r.cpu_temp_c), r.last_seen) for r in sorted(rows.values(), key=lambda r: r.device_id)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)
