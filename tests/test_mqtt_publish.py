"""Results, status, telemetry and discovery against a real mosquitto: the allow-list on real published
payloads, the last will, store-and-forward across a broker outage and a SIGKILLed publisher, TLS."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from edge.mqtt.outbox import OUTBOX_FILE, Outbox
from edge.mqtt.payloads import ALLOWED_KEYS, REQUIRED_KEYS
from edge.mqtt.publisher import MqttService
from edge.paths import PROJECT_ROOT
from edge.types import Urgency
from mqtt_broker import Broker, Listener, device_settings, make_result, wait_until
from mqtt_broker import broker, tls_broker, tls_files  # noqa: F401  (pytest fixtures)

TESTS = Path(__file__).resolve().parent
SCHEMA = json.loads((PROJECT_ROOT / "schemas" / "result.v1.json").read_text())

PRODUCER = """
import json, sys, time
sys.path.insert(0, {tests!r})
from edge.config import load_settings
from edge.mqtt.publisher import MqttService
from mqtt_broker import make_result

settings = load_settings(None, json.loads(sys.argv[1]))
count, interval = int(sys.argv[2]), float(sys.argv[3])
service = MqttService(settings)
service.start()
print("device", service.device_id, flush=True)
for index in range(count):
    print(service.publish_result(make_result()), flush=True)
    time.sleep(interval)
print("done", flush=True)
while True:
    time.sleep(1)
"""


class Producer:
    """A publisher in its own process, printing each event id once its result is in the outbox."""

    def __init__(self, tmp_path: Path, settings_dict: dict, count: int, interval: float = 0.0) -> None:
        script = tmp_path / "producer.py"
        script.write_text(PRODUCER.format(tests=str(TESTS)))
        self.output = tmp_path / f"producer-{time.monotonic_ns()}.out"
        with open(self.output, "w") as out:
            self.process = subprocess.Popen([sys.executable, str(script), json.dumps(settings_dict), str(count),
                                             str(interval)], stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    def event_ids(self) -> list[str]:
        return [line for line in self.lines() if len(line) == 32 and all(c in "0123456789abcdef" for c in line)]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def settings_dict(state_dir: Path, broker: Broker, **mqtt) -> dict:
    return {"state_dir": str(state_dir), "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.1,
                                                  "reconnect_max_s": 0.4, "keepalive_s": 5,
                                                  "results": {"hold_until_minute_end": False}, **mqtt}}


def first_occurrences(event_ids: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for event_id in event_ids:
        seen.setdefault(event_id)
    return list(seen)


@pytest.fixture
def service_factory(tmp_path):
    started: list[MqttService] = []

    def make(broker, state="state", clock=time.time, **mqtt) -> MqttService:
        service = MqttService(device_settings(tmp_path / state, broker, **mqtt),
                              health=lambda: {"frames": 0, "uptime_s": 1.0}, clock=clock)
        service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        if service.state != "stopped":
            service.stop()


def test_published_results_are_exactly_the_allow_list_and_follow_the_schema(broker, service_factory):
    listener = Listener(broker, "edge/+/results")
    service = service_factory(broker, results={"include_age_band": True, "include_body_site": True})
    results = [make_result(), make_result(Urgency.URGENT, label="mel", confidence=0.61, abstained=True),
               make_result(Urgency.UNSURE, confidence=0.3333333)]
    for result in results:
        service.publish_result(result)
    listener.wait_for(lambda: len(listener.on("/results")) == 3, what="3 results")
    messages = listener.on("/results")
    assert all(m.topic == f"edge/{service.device_id}/results" and m.qos == 1 and not m.retain for m in messages)
    for message, result in zip(messages, results):
        payload = json.loads(message.payload)
        jsonschema.validate(payload, SCHEMA)
        assert set(payload) == REQUIRED_KEYS and set(payload) <= ALLOWED_KEYS  # no input for the opt-in fields yet
        assert payload["device_id"] == service.device_id and payload["event_id"] != result.id
        assert payload["confidence"] == round(result.confidence, 3) and payload["time"].endswith(":00Z")
        text = message.payload.decode()
        for private in (result.id, "Jane", "10.0.0.7", "127.0.0.1", "Melanocytic", str(result.timestamp)):
            assert private not in text
    listener.close()


def mid_minute_clock():
    """Wall-clock time that runs at the real rate but starts 30 s into a minute: a test that waits a little
    must not see a minute end that the real clock happened to reach meanwhile."""
    started, base = time.monotonic(), (int(time.time()) // 60) * 60 + 30.0
    return lambda: base + (time.monotonic() - started)


def test_results_wait_until_their_minute_has_ended_and_keep_their_order(broker, service_factory):
    listener = Listener(broker, "edge/+/results")
    offset = [0.0]
    clock = mid_minute_clock()  # the test's half second of waiting never crosses a real minute's end
    service = service_factory(broker, clock=lambda: clock() + offset[0], results={"hold_until_minute_end": True})
    now = clock()
    past = service.publish_result(make_result(timestamp=now - 120))  # its minute is over: sent at once
    listener.wait_for(lambda: listener.json_on("/results"), what="the result from two minutes ago")
    current = service.publish_result(make_result(timestamp=now))  # held until its minute ends
    behind = service.publish_result(make_result(timestamp=now - 120))  # queued behind a held one: waits too
    time.sleep(0.5)
    assert [p["event_id"] for p in listener.json_on("/results")] == [past] and service.outbox.depth() == 2
    offset[0] = 61.0  # the minute has ended
    listener.wait_for(lambda: len(listener.json_on("/results")) == 3, what="the held results")
    clock_set_back = service.publish_result(make_result(timestamp=now + 3600))  # never held more than a minute
    listener.wait_for(lambda: len(listener.json_on("/results")) == 4, what="a result stamped in the future")
    assert [p["event_id"] for p in listener.json_on("/results")] == [past, current, behind, clock_set_back]
    listener.close()


def test_a_held_result_goes_out_when_the_clock_is_set_back(broker, service_factory):
    """NTP stepping the clock back an hour while a result waits for its minute to end must not hold it (and
    everything behind it) for that hour."""
    listener = Listener(broker, "edge/+/results")
    offset = [0.0]
    clock = mid_minute_clock()
    service = service_factory(broker, clock=lambda: clock() + offset[0], results={"hold_until_minute_end": True})
    held = service.publish_result(make_result(timestamp=clock()))
    time.sleep(0.3)
    assert listener.json_on("/results") == [] and service.outbox.depth() == 1
    offset[0] = -3600.0
    listener.wait_for(lambda: listener.json_on("/results"), timeout=5, what="the held result after the step back")
    assert [p["event_id"] for p in listener.json_on("/results")] == [held]
    listener.close()


def test_status_is_retained_online_then_offline_on_a_clean_stop(broker, service_factory):
    watcher = Listener(broker, "edge/+/status")
    service = service_factory(broker)
    # "connected" is set before the status is published: wait until the broker has it, then subscribe anew
    watcher.wait_for(lambda: watcher.on("/status"), what="the online status")
    watcher.close()
    late = Listener(broker, "edge/+/status")  # subscribes after the fact: sees the retained message
    late.wait_for(lambda: late.on("/status"), what="retained status")
    assert late.on("/status")[0].payload == b"online" and late.on("/status")[0].retain
    service.stop()
    late.wait_for(lambda: late.on("/status")[-1].payload == b"offline", what="offline")
    assert_retained_status(broker, b"offline")
    late.close()


def assert_retained_status(broker, payload: bytes) -> None:
    """A client connecting now is handed ``payload`` as the retained status."""
    fresh = Listener(broker, "edge/+/status")
    try:
        fresh.wait_for(lambda: fresh.on("/status"), what="retained status")
        assert fresh.on("/status")[0].payload == payload and fresh.on("/status")[0].retain
    finally:
        fresh.close()


def test_last_will_marks_a_killed_device_offline(broker, tmp_path):
    listener = Listener(broker, "edge/+/status")
    producer = Producer(tmp_path, settings_dict(tmp_path / "state", broker), count=0)
    listener.wait_for(lambda: any(m.payload == b"online" for m in listener.on("/status")), what="online")
    producer.kill()  # no DISCONNECT packet: the broker publishes the will
    listener.wait_for(lambda: listener.on("/status")[-1].payload == b"offline", timeout=15, what="last will")
    assert_retained_status(broker, b"offline")
    listener.close()


def test_telemetry_arrives_on_its_interval_with_the_health_fields(broker, service_factory):
    listener = Listener(broker, "edge/+/telemetry")
    service = service_factory(broker, telemetry_interval_s=0.3)
    listener.wait_for(lambda: len(listener.on("/telemetry")) >= 3, what="3 telemetry messages")
    telemetry = listener.json_on("/telemetry")[-1]
    assert {"uptime_s", "model", "backend", "fallback_reason", "fps", "frames", "classifications", "rejects",
            "queue_depth", "cpu_temp_c", "memory_rss_mb", "software_version", "time"} <= set(telemetry)
    assert telemetry["queue_depth"] == 0 and telemetry["memory_rss_mb"] > 0
    assert service.health()["status"] == "connected"
    late = Listener(broker, "edge/+/telemetry")  # the last telemetry is retained for dashboards that join later
    late.wait_for(lambda: late.on("/telemetry"), what="retained telemetry")
    assert late.on("/telemetry")[0].retain
    listener.close(), late.close()


def test_telemetry_keeps_to_minute_ends_while_results_are_held(broker, service_factory):
    """Its counters would otherwise time a screening to within one telemetry interval, far finer than the
    held result's own minute: telemetry goes out at minute ends, at most once a minute, its time rounded."""
    listener = Listener(broker, "edge/+/telemetry")
    started = time.monotonic()
    minute_end = (int(time.time()) // 60 + 10) * 60  # a whole minute, ten minutes from now
    service_factory(broker, clock=lambda: minute_end - 1.5 + (time.monotonic() - started),
                    telemetry_interval_s=0.3, results={"hold_until_minute_end": True})
    time.sleep(1.0)
    assert listener.on("/telemetry") == []  # not before the minute ends, although connected
    listener.wait_for(lambda: listener.on("/telemetry"), timeout=5, what="telemetry at the minute end")
    arrived = time.monotonic() - started
    telemetry = listener.json_on("/telemetry")[0]
    assert telemetry["time"].endswith(":00Z") and arrived >= 1.4
    time.sleep(2.0)
    assert len(listener.on("/telemetry")) == 1  # the 0.3 s interval does not apply while results are held
    listener.close()


def test_a_status_command_does_not_time_a_held_screening_either(broker, service_factory):
    """A status reply goes out at once: while results are held, its counters must be those of the last
    minute-end telemetry, or asking "status" before and after a screening would time it to the second."""
    minute_end = (int(time.time()) // 60 + 10) * 60
    service = service_factory(broker, clock=lambda: minute_end - 30.0, telemetry_interval_s=0.3,
                              results={"hold_until_minute_end": True})
    wait_until(lambda: service.state == "connected", what="connection")
    before = service.status()
    service.publish_result(make_result())
    after = service.status()
    def steady(status):  # the machine's own readings move between two calls; the counters must not
        return {**status, "telemetry": {k: v for k, v in status["telemetry"].items()
                                        if k not in ("memory_rss_mb", "cpu_temp_c", "uptime_s")}}

    assert steady(after) == steady(before)  # nothing published yet this minute: the machine's state, no counters
    assert after["telemetry"]["model"] and "camera_state" in after["telemetry"]
    assert not {"classifications", "rejects", "queue_depth", "dropped"} & set(after["telemetry"])
    assert "queue_depth" not in after["mqtt"] and "delivered" not in after["mqtt"]
    open_service = service_factory(broker, state="open", telemetry_interval_s=0.3)  # not holding: live counters
    open_service.publish_result(make_result())
    assert open_service.status()["telemetry"]["queue_depth"] >= 0 and "queue_depth" in open_service.status()["mqtt"]


def test_home_assistant_discovery_is_retained_and_follows_availability(broker, service_factory):
    service = service_factory(broker, home_assistant=True)
    wait_until(lambda: service.state == "connected", what="connection")
    listener = Listener(broker, "homeassistant/#")
    listener.wait_for(lambda: len(listener.messages) >= 8, what="discovery configs")
    configs = {m.topic: json.loads(m.payload) for m in listener.messages}
    temperature = configs[f"homeassistant/sensor/edge_{service.device_id}/cpu_temp_c/config"]
    assert temperature["state_topic"] == service.topics.telemetry
    assert temperature["availability_topic"] == service.topics.status and temperature["device_class"] == "temperature"
    late = Listener(broker, "homeassistant/#")  # Home Assistant restarting later still finds every sensor
    late.wait_for(lambda: len(late.messages) >= 8, what="retained discovery configs")
    assert all(m.retain for m in late.messages)
    listener.close(), late.close()


def test_store_and_forward_across_a_broker_outage_in_order_exactly_once(tmp_path, service_factory):
    broker = Broker(tmp_path / "persistent-broker", persistent=True).start()
    try:
        listener = Listener(broker, "edge/+/results", durable=True)
        service = service_factory(broker)
        produced = [service.publish_result(make_result()) for _ in range(3)]
        listener.wait_for(lambda: len(listener.on("/results")) == 3, what="results before the outage")
        broker.stop(graceful=True)
        wait_until(lambda: service.state == "disconnected", what="disconnect")
        during = [service.publish_result(make_result(Urgency.URGENT if i % 5 == 0 else Urgency.ROUTINE))
                  for i in range(25)]
        assert service.outbox.event_ids() == during  # durable, in order, while the broker is down
        broker.start()
        wanted = produced + during
        listener.wait_for(lambda: len({p["event_id"] for p in listener.json_on("/results")}) == len(wanted),
                          timeout=20, what="every result after the outage")
        received = [p["event_id"] for p in listener.json_on("/results")]
        assert first_occurrences(received) == wanted
        # Nothing of ours was in flight at the outage, so the device published each result once. (The broker
        # may redeliver one to the listener itself, flagged DUP, if the listener's ack was cut off.)
        originals = [json.loads(m.payload)["event_id"] for m in listener.on("/results") if not m.dup]
        assert sorted(originals) == sorted(wanted)
        wait_until(lambda: service.outbox.depth() == 0, what="outbox drained")
        listener.close()
    finally:
        broker.stop()


def test_every_result_survives_a_broker_outage_and_a_sigkilled_publisher(tmp_path):
    broker = Broker(tmp_path / "persistent-broker", persistent=True).start()
    try:
        listener = Listener(broker, "edge/+/results", "edge/+/status", durable=True)
        config = settings_dict(tmp_path / "state", broker)
        first = Producer(tmp_path, config, count=80, interval=0.01)
        wait_until(lambda: len(first.event_ids()) >= 15, timeout=20, what="results while connected")
        broker.stop(graceful=True)
        wait_until(lambda: len(first.event_ids()) >= 50, timeout=20, what="results while the broker is down")
        first.kill()  # mid-stream: still producing, with a backlog in its outbox
        produced = first.event_ids()
        queued = Outbox(tmp_path / "state" / OUTBOX_FILE, cap=10_000)
        backlog = queued.event_ids()
        queued.close()
        assert backlog and set(backlog) >= set(produced[-10:])
        broker.start()
        second = Producer(tmp_path, config, count=0)  # the restarted daemon: delivers the backlog
        listener.wait_for(lambda: set(produced) <= {p["event_id"] for p in listener.json_on("/results")},
                          timeout=30, what="every result from the killed publisher")
        received = [p["event_id"] for p in listener.json_on("/results")]
        assert [e for e in first_occurrences(received) if e in set(produced)] == produced  # in order
        assert set(received) <= set(produced) | set(backlog)  # nothing invented; duplicates share an event id
        second.kill()
        listener.wait_for(lambda: listener.on("/status")[-1].payload == b"offline", timeout=15, what="last will")
        listener.close()
    finally:
        broker.stop()


def test_tls_with_a_throwaway_ca(tls_broker, tls_files, service_factory):
    listener = Listener(tls_broker, "edge/+/results", tls=tls_files)
    service = service_factory(tls_broker, tls={"ca_file": str(tls_files.ca_cert)})
    event_id = service.publish_result(make_result())
    listener.wait_for(lambda: listener.json_on("/results"), what="a result over TLS")
    assert listener.json_on("/results")[0]["event_id"] == event_id
    untrusting = service_factory(tls_broker, state="other-state", tls={"enabled": True})  # system CAs only
    wait_until(lambda: untrusting.last_error is not None, what="a TLS failure")
    assert "certificate verify failed" in untrusting.last_error and untrusting.state != "connected"
    listener.close()


def test_username_and_password_file_and_a_refused_login_never_logged(tmp_path, service_factory, caplog):
    caplog.set_level(logging.DEBUG)
    broker = Broker(tmp_path / "auth-broker", users={"device": "correct horse"}).start()
    try:
        password_file = tmp_path / "mqtt-password"
        password_file.write_text("correct horse\n")
        good = service_factory(broker, username="device", password_file=str(password_file))
        wait_until(lambda: good.state == "connected", what="an authenticated connection")
        bad = service_factory(broker, state="bad-state", username="device", password="battery staple")
        wait_until(lambda: bad.last_error and "refused" in bad.last_error, what="a refused login")
        assert bad.state != "connected" and "Not authorized" in bad.last_error
        assert good.health()["last_error"] is None
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert "refused" in logged and "correct horse" not in logged and "battery staple" not in logged
    finally:
        broker.stop()


def test_tls_client_certificate(tmp_path, tls_files, service_factory):
    broker = Broker(tmp_path / "mtls-broker", tls=tls_files, require_client_cert=True).start()
    try:
        tls = {"ca_file": str(tls_files.ca_cert), "cert_file": str(tls_files.client_cert),
               "key_file": str(tls_files.client_key)}
        with_cert = service_factory(broker, tls=tls)
        wait_until(lambda: with_cert.state == "connected", what="a connection with a client certificate")
        without = service_factory(broker, state="no-cert", tls={"ca_file": str(tls_files.ca_cert)})
        wait_until(lambda: without.last_error is not None, what="a refused handshake")
        assert without.state != "connected"
    finally:
        broker.stop()


def test_a_connection_closed_before_the_session_says_so(tmp_path):
    """A TLS client certificate the broker rejects, or a plain client on a TLS port, showed only as
    "connection lost": the broker closing the connection before any CONNACK is now named as such."""
    import socket

    from edge.config import load_settings

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def hang_up():  # accepts, reads the CONNECT, closes: what a TLS port does to a plain client
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            with connection:
                connection.recv(1024)

    threading.Thread(target=hang_up, daemon=True).start()
    settings = load_settings(None, {"state_dir": str(tmp_path), "mqtt": {
        "host": "127.0.0.1", "port": listener.getsockname()[1], "reconnect_min_s": 0.1, "reconnect_max_s": 0.2}})
    service = MqttService(settings, health=lambda: {"frames": 0})
    service.start()
    try:
        wait_until(lambda: service.last_error and "before accepting the session" in service.last_error,
                   what="a clear reason")
        assert "is this an MQTT port?" in service.last_error
    finally:
        service.stop()
        stop.set()
        listener.close()


def test_a_full_disk_while_removing_acknowledged_results_keeps_the_connection(broker, service_factory, monkeypatch):
    """On a full disk the outbox could not forget acknowledged rows: the loop dropped the connection (the last
    will flapped the status) and sent the same first rows again and again; later results never went out."""
    import sqlite3

    service = service_factory(broker)
    wait_until(lambda: service.state == "connected", what="connection")
    listener = Listener(broker, "edge/+/results")
    real_remove, failures = service.outbox.remove, []

    def full_disk(seqs):
        if len(failures) < 3:
            failures.append(seqs)
            raise sqlite3.OperationalError("database or disk is full")
        real_remove(seqs)

    monkeypatch.setattr(service.outbox, "remove", full_disk)
    produced = [service.publish_result(make_result()) for _ in range(5)]
    listener.wait_for(lambda: len(listener.on("/results")) >= 5, what="every result, while removal fails")
    assert failures and service.state == "connected"
    wait_until(lambda: service.outbox.depth() == 0, what="the outbox emptied once the disk had room")
    received = [json.loads(m.payload)["event_id"] for m in listener.on("/results")]
    assert received[:5] == produced
    listener.close()
