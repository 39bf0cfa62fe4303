"""A real mosquitto broker for the MQTT tests (plain and TLS with a throw-away CA), plus small helpers.

Test modules import the fixtures (``from mqtt_broker import broker, tls_broker``). The broker can be
stopped and started again mid-test on the same port, to test store-and-forward.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import load_settings
from edge.types import ModelInfo, Quality, Result, Urgency

MOSQUITTO = "/usr/sbin/mosquitto"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_test_ca(folder: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1/localhost, made now and valid for a day."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    server_key, server_cert = _leaf(ca_key, ca_name, "localhost", now, server=True)
    client_key, client_cert = _leaf(ca_key, ca_name, "edge-device", now, server=False)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
                     folder / "client.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cert, key, cert_path, key_path in ((server_cert, server_key, files.server_cert, files.server_key),
                                           (client_cert, client_key, files.client_cert, files.client_key)):
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    return files


def _leaf(ca_key, ca_name, common_name: str, now: dt.datetime, *, server: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


class Broker:
    """One mosquitto process on a fixed port; ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, folder: Path, tls: TlsFiles | None = None, persistent: bool = False,
                 users: dict[str, str] | None = None, require_client_cert: bool = False) -> None:
        """``users``: require these user names and passwords (mosquitto_passwd) instead of anonymous access;
        ``require_client_cert``: with ``tls``, only clients with a certificate from the test CA get in."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.tls, self.port, self.persistent = folder, tls, free_port(), persistent
        self.users, self.require_client_cert = users, require_client_cert
        self.host = HOST
        self.process: subprocess.Popen | None = None
        self.log = folder / "mosquitto.log"

    def config_text(self) -> str:
        lines = ["per_listener_settings false", f"user {getpass.getuser()}", f"listener {self.port} {HOST}"]
        if self.users:
            passwords = self.folder / "passwords"
            passwords.write_text("")
            for name, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), name, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        # Persistence (saved on a clean stop) keeps a listener's session across a broker restart.
        lines += ["persistence true", f"persistence_location {self.folder}/"] if self.persistent \
            else ["persistence false"]
        if self.tls is not None:
            tls = self.tls
            lines += [f"cafile {tls.ca_cert}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}"]
            if self.require_client_cert:
                lines.append("require_certificate true")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> "Broker":
        conf = self.folder / "mosquitto.conf"
        conf.write_text(self.config_text())
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self, graceful: bool = False) -> None:
        """SIGKILL by default (a crash or a pulled cable: nothing is flushed); SIGTERM saves persistence."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@pytest.fixture
def broker(tmp_path):
    instance = Broker(tmp_path / "broker").start()
    yield instance
    instance.stop()


@pytest.fixture
def tls_files(tmp_path) -> TlsFiles:
    return make_test_ca(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path, tls_files):
    instance = Broker(tmp_path / "tls-broker", tls=tls_files).start()
    yield instance
    instance.stop()


# -- helpers -------------------------------------------------------------------------------------------------

def device_settings(state_dir: Path, broker: Broker, **mqtt_values):
    """Settings for a device talking to ``broker`` with fast reconnects and results sent at once (tests only:
    the default holds each result until its minute has ended)."""
    results = {"hold_until_minute_end": False, **mqtt_values.pop("results", {})}
    mqtt_section = {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.4,
                    "keepalive_s": 5, "telemetry_interval_s": 60, "results": results, **mqtt_values}
    return load_settings(None, {"state_dir": str(state_dir), "mqtt": mqtt_section})


def make_result(urgency: Urgency = Urgency.ROUTINE, label: str = "nv", confidence: float = 0.87654321,
                abstained: bool = False, timestamp: float | None = None) -> Result:
    return Result(label=label, display_name="Melanocytic nevus (a mole)", confidence=confidence,
                  probabilities={label: confidence, "mel": 1 - confidence}, urgency=urgency, quality=Quality(),
                  model=ModelInfo("ham10000-mobilenetv2-int8", "1.2.3", "ab" * 32), backend="cpu", latency_ms=12.5,
                  abstained=abstained, abstain_reason="low confidence, Dr. Jane Doe, 10.0.0.7" if abstained else None,
                  timestamp=time.time() if timestamp is None else timestamp)


class Listener:
    """A test-side paho client that records every message on its filters."""

    def __init__(self, broker: Broker, *filters: str, tls: TlsFiles | None = None, durable: bool = False) -> None:
        """``durable``: a persistent session, so messages published while this listener is cut off (broker
        restart) are queued for it by the broker."""
        self.messages: list[mqtt.MQTTMessage] = []
        self.filters = filters
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-listener-{os.getpid()}-{id(self)}",
                                  clean_session=not durable)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca_cert))
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(5), "no SUBACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not flags.session_present:
            client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, topic_suffix: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(topic_suffix)]

    def json_on(self, topic_suffix: str) -> list[dict]:
        return [json.loads(m.payload) for m in self.on(topic_suffix)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        try:
            wait_until(predicate, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; got topics {[m.topic for m in self.messages][-20:]}") from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
