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
    assert any(line.startswith("[FAIL] backend coral: model pack") for line in lines)
    assert any(line.startswith("[FAIL] backend jetson: no usable ONNX Runtime provider") for line in lines)
    assert any(line.startswith("[FAIL] edge tpu hardware: no Coral USB") for line in lines)
    assert any(line.startswith("[PASS] tflite runtime: ai_edge_litert") for line in lines)
    assert any(line.startswith("[PASS] state_dir:") for line in lines)
    assert any(line.startswith("[") and "camera picamera2" in line for line in lines)
    assert any("replay" in line or "camera choice" in line for line in lines)


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
