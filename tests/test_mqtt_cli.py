"""``edge admin keygen/send/watch`` end to end as an administrator runs them, and the daemon wiring:
pipeline results reach the broker, /health reports MQTT, a restart command ends ``run`` with code 75."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from conftest import run_edge
from edge.config import load_settings
from edge.daemon import Daemon
from edge.kiosk.app import create_app
from edge.mqtt import admin
from edge.mqtt.publisher import RESTART_EXIT_CODE, MqttService
from edge.mqtt.signing import load_private_key
from edge.pipeline import Pipeline
from edge.screening import PipelineScreening
from mqtt_broker import Listener, broker, device_settings, wait_until  # noqa: F401


def keygen(tmp_path: Path) -> tuple[Path, str]:
    key_file = tmp_path / "admin" / "admin.key"
    done = run_edge("admin", "keygen", str(key_file))
    assert done.returncode == 0, done.stderr
    return key_file, done.stdout.strip()


def test_admin_keygen_send_and_watch_end_to_end(tmp_path, broker):
    key_file, public_key = keygen(tmp_path)
    assert key_file.stat().st_mode & 0o777 == 0o600 and "mqtt.commands.admin_keys" in run_edge(
        "admin", "keygen", str(tmp_path / "second.key")).stderr
    again = run_edge("admin", "keygen", str(key_file))
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
    service = MqttService(device_settings(tmp_path / "state", broker, telemetry_interval_s=0.5,
                                          commands={"admin_keys": [public_key]}),
                          health=lambda: {"frames": 1, "inference": {"backend": "cpu",
                                                                     "model": {"name": "ham", "version": "9.9"}}})
    service.start()
    try:
        wait_until(lambda: service.listening_for_commands, what="device subscribed to its commands")
        broker_flags = ["--host", broker.host, "--port", str(broker.port)]
        sent = run_edge("admin", "send", *broker_flags, "--key", str(key_file), "--device", service.device_id,
                        "set_log_level", "level=INFO", timeout=30)
        assert sent.returncode == 0, sent.stderr
        reply = json.loads(sent.stdout.splitlines()[0])
        assert reply["ok"] and reply["result"] == {"level": "INFO", "persisted": False}

        fleet = run_edge("admin", "send", *broker_flags, "--key", str(key_file), "--fleet", "--timeout", "5",
                         "status", timeout=30)
        assert fleet.returncode == 0 and json.loads(fleet.stdout.splitlines()[0])["device_id"] == service.device_id

        refused = run_edge("admin", "send", *broker_flags, "--key", str(key_file), "--device", service.device_id,
                           "set_config", "mqtt.telemetry_interval_s=-5", timeout=30)
        assert refused.returncode == 1 and "mqtt.telemetry_interval_s" in json.loads(refused.stdout)["error"]

        silent = run_edge("admin", "send", *broker_flags, "--key", str(key_file), "--device", "0" * 16,
                          "--timeout", "0.5", "status", timeout=30)
        assert silent.returncode == 1 and "no reply" in silent.stderr

        watched = run_edge("admin", "watch", *broker_flags, "--once", "--seconds", "1.5", timeout=30)
        assert watched.returncode == 0, watched.stderr
        header, *rows = watched.stdout.strip().splitlines()
        assert header.split()[:3] == ["DEVICE", "STATUS", "MODEL"]
        row = next(line for line in rows if line.startswith(service.device_id))
        assert "online" in row and "ham 9.9" in row and "cpu" in row
    finally:
        service.stop()
    watched = run_edge("admin", "watch", "--host", broker.host, "--port", str(broker.port), "--once", "--seconds",
                       "0.5", timeout=30)
    assert "offline" in next(line for line in watched.stdout.splitlines() if line.startswith(service.device_id))


def test_admin_commands_say_what_is_missing(tmp_path):
    no_host = run_edge("admin", "watch", "--once", "--seconds", "0.1")
    assert no_host.returncode == 1 and "mqtt.host is not set" in no_host.stderr


def test_health_reports_mqtt_when_given(tmp_path, broker):
    settings = device_settings(tmp_path / "state", broker)
    pipeline = Pipeline(settings, camera=None, classifier=None, model_error="no model in this test")
    service = MqttService(settings)
    service.start()
    try:
        wait_until(lambda: service.state == "connected", what="connection")
        app = create_app(PipelineScreening(pipeline), settings, mqtt=service)
        body = app.test_client().get("/health").get_json()
        assert body["mqtt"]["status"] == "connected" and body["mqtt"]["device_id"] == service.device_id
        assert body["mqtt"]["queue_depth"] == 0
        plain = create_app(PipelineScreening(pipeline), settings).test_client().get("/health").get_json()
        assert plain["mqtt"] == {"status": "disabled"}
    finally:
        service.stop()


def test_daemon_publishes_pipeline_results_and_restarts_on_command(tmp_path, broker, imagenet_pack, replay_folder):
    key_file, public_key = keygen(tmp_path)
    settings = load_settings(None, {
        "state_dir": str(tmp_path / "state"), "camera": {"source": f"file:{replay_folder}", "fps": 50},
        "inference": {"model_dir": str(imagenet_pack), "backend": "cpu"}, "pipeline": {"auto_classify": True},
        "kiosk": {"enabled": False},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.4,
                 "results": {"hold_until_minute_end": False}, "commands": {"admin_keys": [public_key]}}})
    listener = Listener(broker, "edge/+/results", "edge/+/status")
    daemon = Daemon(settings)
    stop = threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop,))
    runner.start()
    try:
        listener.wait_for(lambda: len(listener.on("/results")) >= 3, timeout=30, what="pipeline results")
        assert {json.loads(m.payload)["model_version"] for m in listener.on("/results")} == {"2.0.0"}
        replies = admin.send(settings.mqtt, load_private_key(key_file), "restart", {}, device=daemon.mqtt.device_id,
                             timeout_s=5, ttl_s=60)
        assert replies and replies[0]["ok"]
        runner.join(15)
        assert not runner.is_alive() and daemon.exit_code == RESTART_EXIT_CODE
        listener.wait_for(lambda: listener.on("/status")[-1].payload == b"offline", what="offline at shutdown")
    finally:
        stop.set()
        runner.join(15)
        listener.close()
