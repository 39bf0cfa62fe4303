"""`edge doctor`: a PASS/FAIL line per part; required parts decide the exit code."""

from __future__ import annotations

import shutil

from conftest import run_edge


def test_doctor_with_a_good_pack(imagenet_pack, tmp_path):
    result = run_edge("doctor", "--model", str(imagenet_pack), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "[PASS] model pack: imagenet-mobilenetv2-int8 2.0.0" in result.stdout
    assert "[PASS] model file cpu: model.tflite sha256 ok" in lines
    assert any(line.startswith("[PASS] backend cpu: cpu (ai_edge_litert, 2 threads)") for line in lines)
    # hardware this machine does not have, and the settings do not ask for: not present, not a failure
    assert any(line.startswith("[ -- ] backend coral: model pack") for line in lines)
    assert any(line.startswith("[ -- ] backend jetson: no usable ONNX Runtime provider") for line in lines)
    assert any(line.startswith("[ -- ] edge tpu hardware: no Coral USB") for line in lines)
    hardware = ("edge tpu hardware", "backend coral", "backend jetson")
    assert not any(line.startswith("[FAIL]") and any(name in line for name in hardware) for line in lines)
    failed = sum(line.startswith("[FAIL]") for line in lines)  # e.g. a dev machine's systemd without edge.service
    assert lines[-1].startswith(f"{sum(line.startswith('[PASS]') for line in lines)} passed, {failed} failed, ")
    assert f"{sum(line.startswith('[ -- ]') for line in lines)} optional not present" in lines[-1]
    assert any(line.startswith("[PASS] tflite runtime: ai_edge_litert") for line in lines)
    assert any(line.startswith("[PASS] state_dir:") for line in lines)
    assert any(line.startswith("[") and "camera picamera2" in line for line in lines)
    assert any("replay" in line or "camera choice" in line for line in lines)


def test_doctor_fails_the_hardware_the_settings_ask_for(imagenet_pack, tmp_path):
    """With inference.backend = "coral" (or "jetson") a missing Coral (or a machine that is not a Jetson) is a
    failure to fix, not optional hardware."""
    common = ("--model", str(imagenet_pack), "--state-dir", str(tmp_path / "state"))
    coral = run_edge("doctor", *common, env={"EDGE_INFERENCE__BACKEND": "coral"}).stdout.splitlines()
    assert any(line.startswith("[FAIL] edge tpu hardware: no Coral USB") for line in coral)
    assert any(line.startswith("[FAIL] backend coral: model pack") for line in coral)
    assert any(line.startswith("[ -- ] backend jetson:") for line in coral)
    jetson = run_edge("doctor", *common, env={"EDGE_INFERENCE__BACKEND": "jetson"}).stdout.splitlines()
    assert any(line.startswith("[FAIL] backend jetson: no usable ONNX Runtime provider") for line in jetson)
    assert any(line.startswith("[ -- ] backend coral:") for line in jetson)


def test_doctor_fails_on_a_tampered_model(imagenet_pack, tmp_path):
    tampered = tmp_path / "pack"
    shutil.copytree(imagenet_pack, tampered)
    (tampered / "model.tflite").write_bytes(b"not the model")
    result = run_edge("doctor", "--model", str(tampered), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1
    assert "[FAIL] model file cpu:" in result.stdout and "refusing to load" in result.stdout
    assert "required checks failed" in result.stdout


def test_doctor_without_a_model(tmp_path):
    result = run_edge("doctor", "--model", str(tmp_path / "none"), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1
    assert "[FAIL] model pack: no model pack at" in result.stdout


def test_doctor_opens_the_camera_the_daemon_is_configured_to_use(imagenet_pack, tmp_path, ham_images):
    """It used to probe only `auto`, and said PASS for a named source the daemon could never open."""
    common = ("--model", str(imagenet_pack), "--state-dir", str(tmp_path / "state"))
    missing = run_edge("doctor", *common, env={"EDGE_CAMERA__SOURCE": f"file:{tmp_path / 'absent.jpg'}"})
    assert any(line.startswith("[FAIL] camera configured (file:") for line in missing.stdout.splitlines()), \
        missing.stdout
    folder = tmp_path / "replay"
    folder.mkdir()
    shutil.copy(ham_images[0], folder / ham_images[0].name)
    present = run_edge("doctor", *common, env={"EDGE_CAMERA__SOURCE": f"file:{folder}"})
    assert any(line.startswith("[PASS] camera configured (file:") and "200x150" in line
               for line in present.stdout.splitlines()), present.stdout


def test_doctor_fails_mqtt_settings_the_daemon_would_refuse_or_the_broker_rejects(imagenet_pack, tmp_path):
    """A TCP connection is not enough: missing TLS files stop the daemon, a wrong password is refused."""
    from mqtt_broker import Broker

    common = ("--model", str(imagenet_pack), "--state-dir", str(tmp_path / "state"))
    broker = Broker(tmp_path / "broker", users={"edge": "right-password"}).start()
    try:
        where = {"EDGE_MQTT__HOST": "127.0.0.1", "EDGE_MQTT__PORT": str(broker.port), "EDGE_MQTT__USERNAME": "edge"}
        no_ca = run_edge("doctor", *common, env={**where, "EDGE_MQTT__TLS__CA_FILE": str(tmp_path / "ca.pem")})
        assert no_ca.returncode == 1 and "[FAIL] mqtt settings: mqtt.tls.ca_file" in no_ca.stdout, no_ca.stdout
        wrong = run_edge("doctor", *common, env={**where, "EDGE_MQTT__PASSWORD": "wrong-password"})
        assert "[FAIL] mqtt broker:" in wrong.stdout and "did not accept" in wrong.stdout, wrong.stdout
        right = run_edge("doctor", *common, env={**where, "EDGE_MQTT__PASSWORD": "right-password"})
        assert "[PASS] mqtt broker: 127.0.0.1" in right.stdout and "accepted an MQTT session" in right.stdout
    finally:
        broker.stop()
