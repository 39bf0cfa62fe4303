"""Building a paho client from the settings (TLS, credentials, last will) and the reconnect backoff.

Credentials are read here and handed straight to paho; they are never logged or stored elsewhere.
Problems an operator must fix (a missing CA or password file) are ``ConfigError``s raised before the
first connection attempt, not retried forever.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import MqttSettings
from edge.errors import ConfigError


@dataclass(frozen=True)
class Will:
    topic: str
    payload: str
    qos: int = 1
    retain: bool = True


def read_password(settings: MqttSettings) -> str | None:
    if settings.password is not None:
        return settings.password.get_secret_value()
    if settings.password_file is None:
        return None
    try:
        return settings.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"mqtt.password_file {settings.password_file}: cannot read: {exc.strerror}") from None


def check_files(settings: MqttSettings) -> None:
    """Fail early, with the key name, for TLS files that are not there."""
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(settings.tls, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"mqtt.tls.{name} {path}: file not found")
    read_password(settings)


def make_client(settings: MqttSettings, client_id: str, *, will: Will | None = None,
                clean_session: bool = True) -> mqtt.Client:
    """A configured, unconnected client (MQTT 3.1.1, callback API version 2)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
                         protocol=mqtt.MQTTv311)
    if settings.username is not None or settings.password is not None or settings.password_file is not None:
        client.username_pw_set(settings.username or "", read_password(settings))
    if settings.tls.active:
        try:
            client.tls_set(ca_certs=_str(settings.tls.ca_file), certfile=_str(settings.tls.cert_file),
                           keyfile=_str(settings.tls.key_file), cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.tls: cannot load the certificates: {exc}") from None
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    return client


def _str(path) -> str | None:
    return None if path is None else str(path)


class Backoff:
    """Exponential backoff with "equal jitter": attempt n waits between d/2 and d, d = min(max, initial·2ⁿ).

    The jitter keeps a fleet that lost the same broker from reconnecting in lockstep; the d/2 floor keeps
    a flapping connection from spinning.
    """

    def __init__(self, initial_s: float, max_s: float, rng: Callable[[], float] = random.random) -> None:
        self.initial_s, self.max_s, self._rng = initial_s, max_s, rng
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
