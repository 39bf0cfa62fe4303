"""The daemon loop on real parts: replay camera, quality gate, the real int8 model, consumers."""

from __future__ import annotations

import json
import os
import shutil
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
                      env={"EDGE_PIPELINE__AUTO_CLASSIFY": "true", "EDGE_KIOSK__ENABLED": "false",
                           "EDGE_KIOSK__HEALTH_WORKER_MODE": "true"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(" screening done in ") >= 3
    # private to the daemon's user without systemd's UMask too (the history was created 0644)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / "history.sqlite").stat().st_mode & 0o777 == 0o600
    # the start-up line reports the camera as the loop opened it, not "down" before the first open
    [running] = [line for line in result.stderr.splitlines() if " running: " in line]
    health = json.loads(running.split(" running: ", 1)[1])
    assert health["status"] == "ok" and health["camera"]["state"] == "ok", running
    assert health["camera"]["spec"] == f"file:{replay_folder}"


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


# -- cameras that stall, come back slowly, or end ----------------------------------------------------------
class HeldCamera:
    """Hardware that cannot exist here, behind the real CameraSource interface: a device that delivers
    ``frames`` frames and then blocks in read() until it is closed (as a stalled GStreamer appsink or
    libcamera request does; closing the device is what makes such a read return)."""

    def __init__(self, frames: int, spec: str = "fake:held"):
        from edge.camera.base import CameraSource

        outer = self

        class Source(CameraSource):
            def _open(self):
                pass

            def _read_bgr(self):
                outer.reads += 1
                if outer.reads > frames:
                    outer.blocked.set()
                    outer.released.wait()
                    raise OSError("device closed")
                return np.full((120, 160, 3), 40 * outer.reads % 255, np.uint8)

            def _close(self):
                outer.released.set()

        self.source_class, self.spec = Source, spec
        self.reads, self.blocked, self.released = 0, threading.Event(), threading.Event()

    def factory(self):
        return self.source_class(self.spec)


def test_a_camera_read_stuck_in_the_driver_is_reported_and_does_not_stop_shutdown(tmp_path, monkeypatch):
    """A read that never returns kept `edge run` from stopping (SIGTERM did nothing) and health said "ok"."""
    import edge.pipeline
    from edge.camera.resilient import ResilientSource
    from edge.daemon import Daemon

    monkeypatch.setattr(edge.pipeline, "CAMERA_STALL_S", 0.5)
    settings = load_settings(None, {"state_dir": str(tmp_path), "camera": {"source": "none", "fps": 20},
                                    "kiosk": {"enabled": False}, "assistant": {"enabled": False},
                                    "inference": {"model_dir": str(tmp_path / "no-pack")}})
    daemon = Daemon(settings)
    held = HeldCamera(frames=3)
    daemon.pipeline.camera = ResilientSource(held.factory).__enter__()
    stop = threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop,), name="daemon-run", daemon=True)
    runner.start()
    assert held.blocked.wait(10), "the fake camera never blocked"
    deadline = time.monotonic() + 5
    while daemon.pipeline.health()["camera"]["state"] != "stalled" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon.pipeline.health()["camera"]["state"] == "stalled"
    stop.set()  # what SIGTERM does
    runner.join(20)
    assert not runner.is_alive(), "the daemon did not stop while a camera read was stuck"
    assert held.released.is_set()  # the device was closed under the stuck read, which ended it


def test_a_camera_that_comes_back_slowly_never_shows_its_last_picture_as_live(imagenet_pack):
    """After a reopen the device can take seconds to deliver; meanwhile the frame from before the outage
    was offered as the live preview, and Capture classified it."""
    from edge.camera.resilient import ResilientSource
    from edge.errors import CameraUnavailable
    from edge.pipeline import open_classifier
    from edge.screening import PipelineScreening

    first, second = HeldCamera(frames=1, spec="fake:first"), HeldCamera(frames=1_000_000, spec="fake:second")
    warmed = threading.Event()

    class SlowStart(second.source_class):  # the second device's first read waits until the test lets it go
        def _read_bgr(self):
            warmed.wait()
            return super()._read_bgr()

    second.source_class = SlowStart
    devices = iter([first, second])
    settings = settings_for(imagenet_pack, "none", pipeline={"auto_classify": False})
    camera = ResilientSource(lambda: next(devices).factory(), backoff_initial=0.05).__enter__()
    pipeline = Pipeline(settings, camera, *open_classifier(settings))
    screening = PipelineScreening(pipeline)
    stop = threading.Event()
    loop = threading.Thread(target=pipeline.run, args=(stop,), name="pipeline")
    try:
        pipeline.step()  # frame 0 from the first device
        assert screening.preview() is not None
        first.released.set()  # the first device fails on its next read: unplugged
        loop.start()
        deadline = time.monotonic() + 10
        while camera.spec != "fake:second" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert camera.spec == "fake:second" and camera.state == "ok"  # reopened, first read pending
        assert screening.preview() is None  # not the picture from before the outage
        with pytest.raises(CameraUnavailable):
            screening.capture()
        warmed.set()
        deadline = time.monotonic() + 10
        while screening.preview() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert screening.preview() is not None and pipeline.latest.frame.index >= camera.first_index
    finally:
        warmed.set()
        stop.set()
        if loop.is_alive():
            loop.join(10)
        pipeline.close()


def test_max_frames_ends_when_no_more_frames_can_come(imagenet_pack, tmp_path, ham_images):
    """`edge run --max-frames N` hung forever with a replay shorter than N frames, or with no camera."""
    import shutil

    folder = tmp_path / "three"
    folder.mkdir()
    for path in ham_images[:3]:
        shutil.copy(path, folder / path.name)
    for source, extra in ((f"file:{folder}", {"loop": False}), ("none", {})):
        settings = settings_for(imagenet_pack, source)
        settings = settings.model_copy(update={"camera": settings.camera.model_copy(update=extra)})
        pipeline = Pipeline.from_settings(settings)
        runner = threading.Thread(target=pipeline.run, args=(threading.Event(),), kwargs={"max_frames": 5},
                                  daemon=True)
        runner.start()
        runner.join(20)
        finished = not runner.is_alive()
        pipeline.close()
        assert finished, source


def test_automatic_classification_never_waits_for_a_kiosk_inference(imagenet_pack, replay_folder):
    """With auto_classify on, the loop waited for the model while a kiosk request (a saliency map) held it:
    the live preview froze, and a long kiosk inference failed the watchdog's loop check."""
    pipeline = Pipeline.from_settings(settings_for(imagenet_pack, f"file:{replay_folder}"))
    try:
        with pipeline._lock:  # the model is busy with a kiosk request
            done = threading.Event()
            stepper = threading.Thread(target=lambda: (pipeline.step(), done.set()))
            stepper.start()
            assert done.wait(10), "the camera loop waited for the model"
            assert pipeline.latest.frame is not None and pipeline.latest.result is None
        stepper.join()
        assert pipeline.step().result is not None  # the model is free again: classified as before
    finally:
        pipeline.close()


def test_an_upload_is_cropped_once_and_the_held_view_is_what_the_model_saw(imagenet_pack, ham_images, monkeypatch):
    """The kiosk keeps the model's view of an upload for saliency: the very crop the result came from, not a
    second crop of the photo made afterwards."""
    from edge.pipeline import open_classifier
    from edge.screening import PipelineScreening
    from edge.vision import preprocess

    settings = settings_for(imagenet_pack, "none", pipeline={"auto_classify": False})
    pipeline = Pipeline(settings, None, *open_classifier(settings))
    screening = PipelineScreening(pipeline)
    crops = []
    original = preprocess.crop_resize
    monkeypatch.setattr(preprocess, "crop_resize", lambda image, spec: crops.append(image.shape) or original(image, spec))
    try:
        result = screening.classify_upload(ham_images[0].read_bytes())
        assert len(crops) == 1, crops
        view, held = screening._images[result.id]  # noqa: SLF001 - what the kiosk holds for this result
        assert held is result and view.shape == (224, 224, 3)
        again = pipeline.classifier.scores(view, cropped=True).probabilities
        assert [float(p) for p in again] == pytest.approx(list(result.probabilities.values()), abs=1e-6)
    finally:
        pipeline.close()


def test_a_camera_plugged_in_after_start_is_taken_up(imagenet_pack, tmp_path, ham_images, monkeypatch):
    """With camera.source "auto" and nothing found at start, the device stayed uploads-only until a restart
    (a USB camera plugged in later, or enumerated late at boot). The loop now probes again when new
    /dev/video nodes appear, and takes up what it finds. The USB camera is a fake behind the real
    CameraSource interface; the sample images that appear meanwhile must not be taken for a camera."""
    import edge.pipeline
    from edge.camera import auto
    from edge.camera.base import CameraSource, ProbeResult

    class UsbCamera(CameraSource):
        def __init__(self, spec, **_):
            super().__init__(spec)

        def _open(self):
            pass

        def _read_bgr(self):
            return np.full((120, 160, 3), 90, np.uint8)

        def _close(self):
            pass

    nodes: list[str] = []
    monkeypatch.setattr(edge.pipeline, "CAMERA_SEARCH_S", 0.1)
    monkeypatch.setattr(auto, "list_v4l2_devices", lambda: list(nodes))
    monkeypatch.setattr(edge.pipeline, "list_v4l2_devices", lambda: list(nodes))
    monkeypatch.setattr(auto, "probe_v4l2_device", lambda device, **_: ProbeResult(f"opencv:{device}", True, "a frame"))
    monkeypatch.setattr(auto, "OpenCVSource", UsbCamera)
    monkeypatch.setattr(edge.pipeline, "open_source", lambda spec, **options: UsbCamera(spec))
    shared = tmp_path / "shared"
    settings = load_settings(None, {"shared_dir": str(shared), "state_dir": str(tmp_path / "state"),
                                    "camera": {"source": "auto", "fps": 20},
                                    "inference": {"model_dir": str(imagenet_pack), "backend": "cpu"}})
    pipeline = Pipeline.from_settings(settings)
    assert pipeline.camera is None  # no camera, no sample images: uploads only
    stop = threading.Event()
    loop = threading.Thread(target=pipeline.run, args=(stop,), name="pipeline")
    loop.start()
    try:
        images = shared / "data" / "ham10000" / "images"
        images.mkdir(parents=True)
        shutil.copy(ham_images[0], images / ham_images[0].name)  # sample images are no camera
        time.sleep(0.5)
        assert pipeline.camera is None
        nodes.append("/dev/video7")  # the USB camera is plugged in
        deadline = time.monotonic() + 10
        while pipeline.counters.frames == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline.camera is not None and pipeline.counters.frames > 0
        assert pipeline.health()["camera"]["spec"] == "opencv:/dev/video7"
    finally:
        stop.set()
        loop.join(10)
        pipeline.close()
