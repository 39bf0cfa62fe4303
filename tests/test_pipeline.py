"""The daemon loop on real parts: replay camera, quality gate, the real int8 model, consumers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import run_edge
from edge.config import load_settings
from edge.pipeline import Pipeline
from edge.types import QualityIssue


def settings_for(pack, source, **extra):
    overrides = {"camera": {"source": source, "fps": 100}, "inference": {"model_dir": str(pack), "backend": "cpu"},
                 "pipeline": {"auto_classify": True}}
    overrides.update(extra)
    return load_settings(None, overrides)


def test_replay_frames_flow_to_consumers(imagenet_pack, replay_folder):
    pipeline = Pipeline.from_settings(settings_for(imagenet_pack, f"file:{replay_folder}"))
    received = []
    pipeline.subscribe(received.append)
    pipeline.run(threading.Event(), max_frames=8)
    health = pipeline.health()
    pipeline.close()
    assert health["frames"] == 8
    assert health["classifications"] == len(received) >= 6  # real HAM images pass the gate
    assert all(r.model.name == "imagenet-mobilenetv2-int8" and r.backend == "cpu" for r in received)
    assert health["camera"]["state"] == "ok"


def test_unusable_frames_are_rejected_with_reasons_not_classified(imagenet_pack, tmp_path, ham_images):
    folder = tmp_path / "blurred"
    folder.mkdir()
    for path in ham_images[:3]:
        image = cv2.imread(str(path))
        cv2.imwrite(str(folder / path.name), cv2.GaussianBlur(image, (0, 0), 6))
    pipeline = Pipeline.from_settings(settings_for(imagenet_pack, f"file:{folder}"))
    steps = []
    pipeline.run(threading.Event(), max_frames=3, on_step=steps.append)
    pipeline.close()
    assert all(step.result is None and QualityIssue.BLUR in step.quality.issues for step in steps)
    assert pipeline.health()["rejects"]["blur"] == 3


def test_a_frame_that_cannot_be_assessed_is_skipped_not_fatal(imagenet_pack, tmp_path, ham_images, caplog):
    """A replay folder (or a camera) that delivers a frame too small to assess: the frame is counted and
    skipped, the loop goes on with the next one, and the good frames are still classified."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in ham_images[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    cv2.imwrite(str(folder / "tiny.png"), np.full((8, 8, 3), 128, np.uint8))
    pipeline = Pipeline.from_settings(settings_for(imagenet_pack, f"file:{folder}"))
    received = []
    pipeline.subscribe(received.append)
    pipeline.run(threading.Event(), max_frames=9)  # three passes over the folder
    health = pipeline.health()
    pipeline.close()
    assert health["failed_frames"] == 3 and len(received) == 6
    assert "frame skipped (1 so far)" in caplog.text and "too small" in caplog.text


def test_missing_model_runs_degraded_and_says_why(tmp_path, replay_folder):
    pipeline = Pipeline.from_settings(settings_for(tmp_path / "no-pack", f"file:{replay_folder}"))
    steps = []
    pipeline.run(threading.Event(), max_frames=2, on_step=steps.append)
    health = pipeline.health()
    pipeline.close()
    assert health["status"] == "degraded"
    assert "no model pack at" in health["inference"]["error"]
    assert all(step.quality is not None and step.result is None for step in steps)


def test_no_camera_means_uploads_only(imagenet_pack):
    pipeline = Pipeline.from_settings(settings_for(imagenet_pack, "none"))
    assert pipeline.camera is None
    assert pipeline.step().frame is None
    assert pipeline.health()["camera"] is None


def test_camera_that_disappears_is_reopened_without_stopping(imagenet_pack, replay_folder, tmp_path):
    settings = settings_for(imagenet_pack, f"file:{replay_folder}",
                            camera={"source": f"file:{replay_folder}", "fps": 100,
                                    "reopen_backoff_initial_s": 0.05, "reopen_backoff_max_s": 0.1})
    pipeline = Pipeline.from_settings(settings)
    assert pipeline.step().frame is not None
    moved = tmp_path / "unplugged"
    replay_folder.rename(moved)
    outages = [pipeline.step() for _ in range(5)]
    assert all(step.frame is None for step in outages[1:])
    assert pipeline.health()["camera"]["state"] == "down"
    moved.rename(replay_folder)
    frames = [pipeline.step().frame for _ in range(40)]
    assert any(frame is not None for frame in frames)
    assert pipeline.health()["camera"]["state"] == "ok"
    pipeline.close()


def test_edge_run_cli_replays_and_exits_cleanly(imagenet_pack, replay_folder, tmp_path):
    result = run_edge("run", "--model", str(imagenet_pack), "--source", f"file:{replay_folder}",
                      "--max-frames", "4", "--state-dir", str(tmp_path / "state"),
                      env={"EDGE_PIPELINE__AUTO_CLASSIFY": "true", "EDGE_KIOSK__ENABLED": "false"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(" result ") >= 3
    assert (tmp_path / "state").is_dir()


def test_edge_run_without_camera_says_so_and_stops_on_sigterm(imagenet_pack, tmp_path):
    env = {**os.environ, "EDGE_SHARED_DIR": str(tmp_path / "empty-shared"), "EDGE_KIOSK__PORT": "0",
           "EDGE_ASSISTANT__ENABLED": "false"}
    daemon = subprocess.Popen([sys.executable, "-m", "edge", "run", "--model", str(imagenet_pack), "--source", "auto",
                               "--state-dir", str(tmp_path / "s")], env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = daemon.stderr.readline()
        lines.append(line)
        if "running:" in line or not line:
            break
    daemon.send_signal(signal.SIGTERM)
    _, rest = daemon.communicate(timeout=30)
    log = "".join(lines) + rest
    assert daemon.returncode == 0, log
    assert "no camera found" in log and "uploads only" in log
    assert "stopping:" in log
