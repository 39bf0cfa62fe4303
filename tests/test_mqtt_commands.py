"""Signed administration commands against a real broker: accepted and executed when valid; rejected with
a reason on cmd/reply, and without any effect, when unsigned, forged, expired, replayed, mistargeted,
malformed or oversized."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mqtt_broker import Listener, broker, device_settings, make_result, wait_until  # noqa: F401
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge.mqtt import admin, remote_config
from edge.mqtt.commands import MAX_COMMAND_BYTES
from edge.mqtt.publisher import MqttService
from edge.mqtt.signing import public_key_b64, sign_envelope
from edge.types import Urgency


class Device:
    """An MQTT service with an admin key, and records of what its hooks were asked to do."""

    def __init__(self, tmp_path, broker, admin_key: Ed25519PrivateKey, health=None, purge=None) -> None:
        self.purges: list[float] = []
        self.restarts: list[float] = []
        self.settings = device_settings(tmp_path / "state", broker, password="hunter2-secret",
                                        commands={"admin_keys": [public_key_b64(admin_key.public_key())]})
        self.service = MqttService(self.settings, health=health or (lambda: {"frames": 3, "uptime_s": 2.0}),
                                   purge=purge or (lambda: self.purges.append(time.time()) or {"history": 2}),
                                   restart=lambda: self.restarts.append(time.time()))
        self.service.start()
        # "connected" comes at CONNACK; a command sent before the SUBACK may be lost (a CI failure did this).
        wait_until(lambda: self.service.listening_for_commands, what="device subscribed to its commands")
        self.broker = broker
        self.key = admin_key

    def send(self, command: str, args: dict | None = None, *, fleet: bool = False, timeout: float = 5.0) -> dict:
        replies = admin.send(self.service.settings.mqtt, self.key, command, args or {},
                             device=None if fleet else self.service.device_id, timeout_s=timeout, ttl_s=60)
        assert len(replies) == 1, replies
        return replies[0]

    def send_raw(self, payload: bytes, topic: str | None = None) -> dict:
        """Publish bytes on the device's cmd topic and return the next reply."""
        listener = Listener(self.broker, self.service.topics.cmd_reply)
        try:
            listener.client.publish(topic or self.service.topics.cmd, payload, qos=1).wait_for_publish(5)
            listener.wait_for(lambda: listener.messages, what="a reply")
            return json.loads(listener.messages[0].payload)
        finally:
            listener.close()


@pytest.fixture
def admin_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def device(tmp_path, broker, admin_key):
    instance = Device(tmp_path, broker, admin_key)
    root_level = logging.getLogger().level
    yield instance
    instance.service.stop()
    logging.getLogger().setLevel(root_level)


def envelope(device: Device, command: str = "restart", args: dict | None = None, *, target: str | None = None,
             issued: int | None = None, ttl: int = 60) -> dict:
    issued = int(time.time()) if issued is None else issued
    return {"command": command, "args": args or {}, "target": target or device.service.device_id,
            "nonce": os.urandom(16).hex(), "issued_at": issued, "expires_at": issued + ttl}


def encoded(value) -> bytes:
    return json.dumps(value).encode()


def test_health_says_whether_commands_can_arrive(device, tmp_path, admin_key):
    assert device.service.health()["commands"] == "listening"
    device.broker.stop()
    wait_until(lambda: device.service.state == "disconnected", what="the broker gone")
    assert device.service.health()["commands"] == "not subscribed"
    device.broker.start()
    wait_until(lambda: device.service.listening_for_commands, what="subscribed again after the broker came back")
    assert device.send("status")["ok"]


def test_a_refused_command_subscription_is_reported(device, caplog):
    # mosquitto 2.0 grants every subscription to an MQTT 3.1.1 client and filters on delivery, so the
    # refusal another broker sends (SUBACK 0x80) is handed to the service's callback directly.
    refusal = ReasonCode(PacketTypes.SUBACK, identifier=0x80)
    device.service._on_subscribe(device.service._client, None, 7, [ReasonCode(PacketTypes.SUBACK, identifier=1),
                                                                   refusal], None)
    assert "refused the command subscription" in device.service.last_error
    assert not device.service.listening_for_commands and device.service.health()["commands"] == "not subscribed"
    assert "administration commands cannot reach this device" in caplog.text
    device.broker.stop()
    device.broker.start()  # a later connection whose subscription is granted says so again
    wait_until(lambda: device.service.listening_for_commands, what="subscribed on the next connection")
    assert device.service.health()["commands"] == "listening" and device.service.last_error is None


def test_status(device):
    reply = device.send("status")
    assert reply["ok"] and reply["command"] == "status" and reply["device_id"] == device.service.device_id
    assert reply["result"]["telemetry"]["frames"] == 3 and reply["result"]["mqtt"]["status"] == "connected"
    assert reply["result"]["mqtt"]["commands"] == "listening"


def test_get_config_redacts_secrets(device):
    listener = Listener(device.broker, device.service.topics.cmd_reply)
    reply = device.send("get_config")
    listener.wait_for(lambda: listener.messages, what="the raw reply")
    assert reply["ok"] and reply["result"]["settings"]["mqtt"]["password"] == "<redacted>"
    assert reply["result"]["settings"]["mqtt"]["port"] == device.broker.port
    assert isinstance(reply["result"]["settings"]["assistant"]["max_tokens"], int)  # a count, not a secret
    assert b"hunter2" not in listener.messages[0].payload
    listener.close()


def test_set_config_validates_persists_and_applies_live_keys(device):
    reply = device.send("set_config", {"mqtt.telemetry_interval_s": 0.3, "log_level": "DEBUG", "camera": {"fps": 5}})
    assert reply["ok"], reply
    assert reply["result"] == {"changed": ["camera.fps", "log_level", "mqtt.telemetry_interval_s"],
                               "applied": ["log_level", "mqtt.telemetry_interval_s"],
                               "applies_after_restart": ["camera.fps"]}
    assert remote_config.read_overlay(device.settings.state_dir) == {
        "mqtt": {"telemetry_interval_s": 0.3}, "log_level": "DEBUG", "camera": {"fps": 5}}
    assert logging.getLogger().level == logging.DEBUG
    listener = Listener(device.broker, device.service.topics.telemetry)  # the new interval is in effect
    listener.wait_for(lambda: len(listener.messages) >= 3, timeout=5, what="telemetry every 0.3 s")
    listener.close()
    reloaded = remote_config.with_overlay(device.settings)  # what the daemon loads at its next start
    assert (reloaded.camera.fps, reloaded.mqtt.telemetry_interval_s) == (5.0, 0.3)


def test_set_config_rejects_invalid_values_with_the_key_path_and_keeps_everything(device):
    for args, reason in [({"mqtt": {"telemetry_interval_s": -1}}, "mqtt.telemetry_interval_s"),
                         ({"camera.nope": 1}, "camera.nope: unknown setting"),
                         ({"inference.backend": "tpu9000"}, "inference.backend"),
                         # valid alone, but the camera could not start with it: refused before it is saved
                         ({"camera.reopen_backoff_initial_s": 60}, "reopen_backoff_initial_s must not exceed"),
                         ({"mqtt.commands.admin_keys": []}, "local configuration"),
                         ({}, "non-empty")]:
        reply = device.send("set_config", args)
        assert not reply["ok"] and reason in reply["error"], reply
    assert not remote_config.overlay_path(device.settings.state_dir).exists()
    assert device.service.settings.mqtt.telemetry_interval_s == 60


def test_a_rejected_set_config_never_echoes_a_password(device, caplog):
    """The mqtt section fails as a whole on the first change (reconnect order), and its value holds the
    device's password: the reply names the problem and quotes no password. Credentials themselves cannot be
    set remotely, and the refusal does not quote the value either."""
    listener = Listener(device.broker, device.service.topics.cmd_reply)
    try:
        for args, reason in [({"mqtt.reconnect_min_s": 600, "mqtt.reconnect_max_s": 1}, "invalid setting: mqtt"),
                             ({"mqtt.password": 12345678}, "mqtt.password: can only be changed"),
                             ({"mqtt.password_file": "/etc/edge/mqtt-password"}, "local configuration")]:
            reply = device.send("set_config", args)
            assert not reply["ok"] and reason in reply["error"], reply
        listener.wait_for(lambda: len(listener.messages) == 3, what="the raw replies")
    finally:
        listener.close()
    assert "reconnect_min_s must not exceed" in json.loads(listener.messages[0].payload)["error"]
    for message in listener.messages:
        assert b"hunter2" not in message.payload and b"12345678" not in message.payload
    assert "hunter2" not in caplog.text and "12345678" not in caplog.text


@pytest.mark.parametrize("args", [
    {"mqtt.host": "attacker.example"}, {"mqtt": {"port": 1884}}, {"mqtt.password_file": "/etc/edge/tls/client.key"},
    {"mqtt.tls.enabled": False}, {"mqtt.topic_prefix": "elsewhere"},
    {"camera.source": "gst:videotestsrc ! tcpclientsink host=10.0.0.9"}, {"camera.replay_dir": "/"},
    {"kiosk.host": "0.0.0.0"}, {"kiosk.health_worker_mode": True}, {"inference.model_dir": "/tmp"},
    {"inference.coral.library": "/tmp/evil.so"}, {"assistant.model_path": "/tmp/x.gguf"}, {"shared_dir": "/"},
    {"log_level": "DEBUG", "mqtt.commands.enabled": False}])
def test_set_config_cannot_move_data_off_the_device_or_load_other_code(device, args):
    """Broker, credentials, topics, camera source, paths and the kiosk's address are local decisions: a
    signed command that changes them could send a password file, or patients' images, anywhere."""
    reply = device.send("set_config", args)
    assert not reply["ok"] and "can only be changed in the device's local configuration" in reply["error"], reply
    assert not remote_config.overlay_path(device.settings.state_dir).exists()


def test_a_slow_command_does_not_hold_up_results_or_the_connection(tmp_path, broker, admin_key):
    """Commands run off the MQTT thread: while one is busy (here `status`, waiting inside the health hook, as
    a model download would), results still go out and the connection stays up."""
    busy, release, block_next = threading.Event(), threading.Event(), [False]

    def health():
        if block_next[0]:
            block_next[0] = False
            busy.set()
            release.wait(20)
        return {"frames": 3, "uptime_s": 2.0}

    device = Device(tmp_path, broker, admin_key, health=health)
    listener = Listener(broker, "edge/#")
    try:
        block_next[0] = True
        listener.client.publish(device.service.topics.cmd, encoded(sign_envelope(envelope(device, "status"),
                                                                                 device.key)), qos=1)
        assert busy.wait(10), "the status command never started"
        device.service.publish_result(make_result(Urgency.URGENT, label="mel"))
        listener.wait_for(lambda: listener.on("/results"), what="a result while a command is busy")
        assert not listener.on("/cmd/reply") and device.service.state == "connected"
        release.set()
        listener.wait_for(lambda: listener.on("/cmd/reply"), what="the reply once the command is done")
        assert json.loads(listener.on("/cmd/reply")[0].payload)["ok"] is True
        assert device.service.connects == 1
    finally:
        release.set()
        listener.close()
        device.service.stop()


def test_a_restart_happens_even_if_the_broker_is_gone_when_its_reply_is_ready(tmp_path, broker, admin_key):
    """The restart waits for its reply to be acknowledged, but never for a broker that went away meanwhile."""
    purging, release = threading.Event(), threading.Event()

    def slow_purge():
        purging.set()
        release.wait(20)
        return {"history": 0}

    device = Device(tmp_path, broker, admin_key, purge=slow_purge)
    client = Listener(broker, device.service.topics.cmd_reply)
    try:
        for command in ("purge_local_data", "restart"):  # the restart waits in line behind the slow purge
            client.client.publish(device.service.topics.cmd, encoded(sign_envelope(envelope(device, command),
                                                                                   device.key)), qos=1)
        assert purging.wait(10)
        client.close()
        broker.stop()
        release.set()
        wait_until(lambda: device.restarts, timeout=15, what="the restart with no broker to take its reply")
    finally:
        release.set()
        device.service.stop()


def test_set_log_level(device):
    assert device.send("set_log_level", {"level": "WARNING"})["ok"]
    assert logging.getLogger().level == logging.WARNING
    reply = device.send("set_log_level", {"level": "LOUD"})
    assert not reply["ok"] and "set_log_level needs" in reply["error"]
    assert logging.getLogger().level == logging.WARNING


def test_purge_local_data_empties_the_outbox_and_calls_the_hooks(device):
    for index in range(3):  # rows the pump has not been woken for: still queued
        device.service.outbox.enqueue(f"{index:032x}", b"{}", Urgency.ROUTINE)
    reply = device.send("purge_local_data")
    assert reply["ok"] and reply["result"]["purged"] == {"outbox": 3, "history": 2}
    assert device.service.outbox.depth() == 0 and len(device.purges) == 1


def test_restart_replies_first_then_calls_the_restart_hook(device):
    reply = device.send("restart")
    assert reply["ok"] and reply["result"] == {"restarting": True}
    wait_until(lambda: device.restarts, what="the restart hook")


def test_fleet_commands_reach_the_device_and_others_are_ignored(device):
    reply = device.send("status", fleet=True, timeout=5)
    assert reply["ok"] and reply["device_id"] == device.service.device_id
    other = sign_envelope(envelope(device, "status", target="f" * 16), device.key)
    listener = Listener(device.broker, device.service.topics.cmd_reply)
    listener.client.publish(device.service.topics.fleet_cmd, encoded(other), qos=1).wait_for_publish(5)
    time.sleep(0.5)
    assert listener.messages == []  # a fleet-topic command for another device is not ours to answer
    listener.close()


def rejected_cases(device: Device) -> list[tuple[str, bytes, str]]:
    forger = Ed25519PrivateKey.generate()
    genuine = sign_envelope(envelope(device), device.key)
    forged_with_our_key_id = {**sign_envelope(envelope(device), forger), "key_id": genuine["key_id"]}
    return [
        ("unsigned", encoded(envelope(device)), "unsigned command"),
        ("forged", encoded(forged_with_our_key_id), "bad signature"),
        ("tampered", encoded({**genuine, "command": "purge_local_data"}), "bad signature"),
        ("unknown key", encoded(sign_envelope(envelope(device), forger)), "does not trust"),
        ("expired", encoded(sign_envelope(envelope(device, issued=int(time.time()) - 4000), device.key)), "expired"),
        ("future", encoded(sign_envelope(envelope(device, issued=int(time.time()) + 4000), device.key)),
         "not yet valid"),
        ("wrong target", encoded(sign_envelope(envelope(device, target="a" * 16), device.key)), "wrong target"),
        ("not json", b"restart now please", "not UTF-8 JSON"),
        # Python refuses to convert integers of more than 4,300 digits (ValueError, not a JSON error).
        ("huge number", b'{"issued_at": ' + b"9" * 5000 + b"}", "not UTF-8 JSON"),
        # A lone surrogate parses as JSON but cannot be encoded for the signature check.
        ("lone surrogate", encoded({**envelope(device, args={"x": "\ud800"}),
                                    "signature": base64.b64encode(bytes(64)).decode()}), "not valid Unicode"),
        ("wrong types", encoded({**envelope(device), "args": "all"}), "must be an object"),
        ("oversized", encoded(sign_envelope(envelope(device, "set_config", {"log_level": "DEBUG",
                                                                             "x": "y" * MAX_COMMAND_BYTES}),
                                            device.key)), "too large"),
    ]


def test_bad_commands_are_rejected_with_a_reason_and_change_nothing(device, caplog):
    caplog.set_level(logging.WARNING, logger="edge.mqtt")
    before = logging.getLogger().level
    for name, payload, reason in rejected_cases(device):
        reply = device.send_raw(payload)
        assert reply["ok"] is False and reason in reply["error"], (name, reply)
        assert reply["device_id"] == device.service.device_id
        if name not in ("not json", "huge number", "oversized"):
            assert reply.get("nonce"), (name, reply)  # the admin can match the rejection to what was sent
    assert device.restarts == [] and device.purges == []
    assert logging.getLogger().level == before
    assert not remote_config.overlay_path(device.settings.state_dir).exists()
    assert len(device.service.verifier.nonces) == 0  # rejected commands burn no nonce
    assert sum("command rejected" in r.message for r in caplog.records) == len(rejected_cases(device))
    assert not any("hunter2" in r.getMessage() for r in caplog.records)


def test_a_replayed_command_is_rejected(device):
    signed = encoded(sign_envelope(envelope(device, "set_log_level", {"level": "ERROR"}), device.key))
    assert device.send_raw(signed)["ok"] is True
    logging.getLogger().setLevel(logging.INFO)
    replay = device.send_raw(signed)
    assert replay["ok"] is False and "replayed" in replay["error"]
    assert logging.getLogger().level == logging.INFO  # the replay changed nothing
