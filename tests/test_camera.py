"""Camera sources: real replay of HAM10000 images and real videos, real OpenCV failures, and a fake
picamera2 module standing in for the CSI hardware behind picamera2's own interface."""

from __future__ import annotations

import logging
import shutil
import struct
import sys
import types
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import edge.camera.auto as auto
from edge.camera import (
    CameraSource,
    FileSource,
    OpenCVSource,
    Picamera2Source,
    ProbeResult,
    ResilientSource,
    open_source,
    probe_auto,
)
from edge.camera.opencv import opencv_has_gstreamer
from edge.errors import CameraUnavailable

from conftest import HAM_IMAGES, PRETRAINED, SHARED, _require  # EDGE_SHARED_DIR or ../shared; missing data fails

GRACE_HOPPER = PRETRAINED / "grace_hopper.bmp"


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture
def ham_paths() -> list[Path]:
    return sorted(_require(HAM_IMAGES).glob("*.jpg"))[:5]


@pytest.fixture
def ham_folder(tmp_path: Path, ham_paths: list[Path]) -> Path:
    """A replay folder holding copies of five real HAM10000 images."""
    folder = tmp_path / "replay"
    folder.mkdir()
    for path in ham_paths:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def camera_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="edge.camera")
    return caplog


@pytest.fixture
def no_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    """No picamera2 module and no /dev/video* devices, whatever the machine has."""
    monkeypatch.setitem(sys.modules, "picamera2", None)  # a None entry makes `import picamera2` fail
    monkeypatch.setattr(auto, "list_v4l2_devices", lambda: [])


def pil_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# -- fake picamera2 (CSI hardware cannot exist here) ------------------------------------------------------
class FakePicamera2:
    """Implements the picamera2 calls Picamera2Source makes; ``RGB888`` arrays are BGR, as on a Pi."""

    cameras: list[dict] = [{"Model": "imx708", "Num": 0}]
    instances: list[FakePicamera2] = []
    fail_capture = False
    native_format: str | None = None

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.config: dict | None = None
        self.started = False
        self.closed = False
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict]:
        return list(FakePicamera2.cameras)

    def create_preview_configuration(self, main: dict, **kwargs) -> dict:
        return {"use_case": "preview", "main": dict(main), **kwargs}

    def create_video_configuration(self, main: dict, **kwargs) -> dict:
        return {"use_case": "video", "main": dict(main), **kwargs}

    def configure(self, config: dict) -> None:
        assert config["main"]["format"] == "RGB888"
        self.config = config
        if FakePicamera2.native_format:  # a USB camera: libcamera substitutes its own format
            self.config = {**config, "main": {**config["main"], "format": FakePicamera2.native_format}}

    def camera_configuration(self) -> dict:
        return self.config

    def start(self) -> None:
        assert self.config is not None, "configure() must come before start()"
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        assert self.started and name == "main"
        if FakePicamera2.fail_capture:
            raise RuntimeError("Camera frontend has timed out!")
        width, height = self.config["main"]["size"]
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 0] = 255  # pure blue, stored B,G,R like libcamera's RGB888
        return image

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(FakePicamera2, "cameras", [{"Model": "imx708", "Num": 0}])
    monkeypatch.setattr(FakePicamera2, "instances", [])
    monkeypatch.setattr(FakePicamera2, "fail_capture", False)
    return FakePicamera2


# -- file replay: folders, single images, videos --------------------------------------------------------
def test_folder_replay_of_real_images_is_rgb_in_order_and_loops(ham_folder: Path, ham_paths: list[Path]) -> None:
    with FileSource(ham_folder) as source:
        frames = [source.read() for _ in range(7)]
    assert [f.index for f in frames] == list(range(7))
    assert {f.source for f in frames} == {f"file:{ham_folder}"}
    for frame, path in zip(frames, ham_paths + ham_paths[:2]):
        assert frame.image.shape == (150, 200, 3) and frame.image.dtype == np.uint8
        expected = pil_rgb(path)
        # Decoders differ by a rounding step; swapped channels would differ by tens of levels.
        assert mean_abs_diff(frame.image, expected) < 2.0
        assert mean_abs_diff(frame.image[..., ::-1], expected) > 5.0
    np.testing.assert_array_equal(frames[5].image, frames[0].image)


def test_folder_replay_without_loop_ends_with_camera_unavailable(ham_folder: Path) -> None:
    with FileSource(ham_folder, loop=False) as source:
        for _ in range(5):
            source.read()
        with pytest.raises(CameraUnavailable, match="finished after 5 images"):
            source.read()


def test_folder_replay_skips_undecodable_file_with_warning(
    ham_folder: Path, ham_paths: list[Path], camera_log: pytest.LogCaptureFixture
) -> None:
    (ham_folder / "0000_corrupt.jpg").write_bytes(b"not a jpeg")
    with FileSource(ham_folder) as source:
        first = source.read()
    assert mean_abs_diff(first.image, pil_rgb(ham_paths[0])) < 2.0
    assert any(r.levelno == logging.WARNING and "0000_corrupt.jpg" in r.getMessage() for r in camera_log.records)


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG that declares ``width`` x ``height`` (1-bit grey) and carries only its first rows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width // 8 + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_folder_replay_skips_an_image_too_large_to_decode(
    ham_folder: Path, ham_paths: list[Path], camera_log: pytest.LogCaptureFixture
) -> None:
    """A PNG that declares 50,000 x 50,000 px in a few kB: refused from its header (OpenCV would raise, or
    allocate gigabytes just under its own limit) and skipped like any unusable file."""
    bomb = ham_folder / "0000_bomb.png"
    bomb.write_bytes(png_declaring(50_000, 50_000))
    with FileSource(ham_folder) as source:
        frames = [source.read() for _ in range(len(ham_paths) + 2)]  # loops past the bomb again
    assert all(f.image.shape == (150, 200, 3) for f in frames)
    assert any("0000_bomb.png" in r.getMessage() for r in camera_log.records if r.levelno == logging.WARNING)


def test_folder_replay_does_not_read_a_huge_file_and_says_why_once(
    ham_folder: Path, ham_paths: list[Path], camera_log: pytest.LogCaptureFixture
) -> None:
    """A 1.5 GB file in a replay folder was read whole, on every loop, before any size check (1.5 GB peak),
    and every loop logged another warning without the reason."""
    huge = ham_folder / "0000_huge.jpg"
    with open(huge, "wb") as handle:  # sparse: takes no disk space, and reading it would take 1.5 GB
        handle.truncate(1_500_000_000)
    with FileSource(ham_folder) as source:
        frames = [source.read() for _ in range(3 * len(ham_paths) + 1)]  # loops past it three times
    assert all(f.image.shape == (150, 200, 3) for f in frames)
    warnings = [r.getMessage() for r in camera_log.records if r.levelno == logging.WARNING and "0000_huge" in
                r.getMessage()]
    assert len(warnings) == 1 and "file is 1500.0 MB, above the" in warnings[0], warnings


def test_resilient_source_treats_any_read_error_as_the_camera_going_down(ham_folder: Path) -> None:
    """An error the source did not foresee (here a cv2.error from a driver) reopens the camera, never escapes."""
    clock = FakeClock()
    failures = [cv2.error("driver hiccup")]

    class Flaky(FileSource):
        def read(self):
            if failures:
                raise failures.pop()
            return super().read()

    camera = ResilientSource(lambda: Flaky(ham_folder), clock=clock, sleep=clock.sleep)
    with camera:
        assert camera.read() is None and camera.state == "down" and "driver hiccup" in camera.last_error
        frames = [camera.read() for _ in range(20)]
        assert any(frame is not None for frame in frames) and camera.state == "ok"


def test_folder_where_every_file_fails_is_unavailable(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.png"):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(CameraUnavailable, match="none of the 2 images"):
        FileSource(tmp_path).open()


def test_single_image_repeats_as_rgb() -> None:
    source = open_source(f"file:{_require(GRACE_HOPPER)}")
    with source:
        first, second = source.read(), source.read()
    expected = pil_rgb(GRACE_HOPPER)  # BMP is lossless: the pixels must match exactly
    np.testing.assert_array_equal(first.image, expected)
    np.testing.assert_array_equal(second.image, expected)
    assert (first.index, second.index) == (0, 1)
    assert first.image is not second.image


def write_video(path: Path, fourcc: str, colours_rgb: list[tuple[int, int, int]]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc}"
    for rgb in colours_rgb:
        writer.write(np.full((48, 64, 3), rgb[::-1], np.uint8))  # VideoWriter takes BGR
    writer.release()


VIDEO_COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


@pytest.mark.parametrize(("name", "fourcc"), [("clip.avi", "MJPG"), ("clip.mp4", "mp4v")])
def test_video_replay_reads_every_frame_in_rgb_and_loops(tmp_path: Path, name: str, fourcc: str) -> None:
    video = tmp_path / name
    write_video(video, fourcc, VIDEO_COLOURS)
    with FileSource(video) as source:
        frames = [source.read() for _ in range(2 * len(VIDEO_COLOURS))]
    expected = VIDEO_COLOURS + VIDEO_COLOURS
    for frame, rgb in zip(frames, expected):
        assert frame.image.shape == (48, 64, 3)
        mean = frame.image.reshape(-1, 3).mean(axis=0)
        assert np.all(np.abs(mean - np.array(rgb)) < 12), (mean, rgb)
    assert [f.index for f in frames] == list(range(10))


def test_video_replay_without_loop_ends(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    write_video(video, "MJPG", VIDEO_COLOURS)
    with FileSource(video, loop=False) as source:
        for _ in VIDEO_COLOURS:
            source.read()
        with pytest.raises(CameraUnavailable, match="ended"):
            source.read()


def unusable_path(folder: Path, kind: str) -> Path:
    """Build one kind of path a replay cannot use."""
    if kind == "missing":
        return folder / "missing"
    if kind == "empty-folder":
        return folder
    path = folder / {"unsupported": "notes.txt", "broken-video": "broken.mp4"}[kind]
    path.write_bytes(b"junk")
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("empty-folder", "has no images"),
        ("unsupported", "cannot replay"),
        ("broken-video", "cannot open video"),
    ],
)
def test_unusable_replay_paths_are_unavailable(tmp_path: Path, kind: str, message: str) -> None:
    with pytest.raises(CameraUnavailable, match=message):
        FileSource(unusable_path(tmp_path, kind)).open()


def test_context_manager_releases_on_exception(ham_folder: Path) -> None:
    source = FileSource(ham_folder)
    with pytest.raises(ZeroDivisionError):
        with source:
            source.read()
            1 / 0
    with pytest.raises(CameraUnavailable, match="not open"):
        source.read()
    source.close()  # idempotent


def test_read_before_open_is_unavailable(ham_folder: Path) -> None:
    with pytest.raises(CameraUnavailable, match="not open"):
        FileSource(ham_folder).read()


# -- OpenCV: V4L2 and GStreamer -------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["opencv:/dev/video99", "opencv:99"])
def test_missing_v4l2_device_gives_actionable_error(spec: str) -> None:
    source = open_source(spec)
    assert isinstance(source, OpenCVSource)
    with pytest.raises(CameraUnavailable, match=r"/dev/video99 does not exist.*plugged in"):
        source.open()
    source.close()


def test_gstreamer_on_pip_opencv_says_why() -> None:
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    pipeline = (
        "gst:nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! "
        "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1"
    )
    with pytest.raises(CameraUnavailable, match="GStreamer") as excinfo:
        open_source(pipeline).open()
    assert "--system-site-packages" in str(excinfo.value)


def test_gstreamer_detection_reads_build_information() -> None:
    assert opencv_has_gstreamer("  Video I/O:\n    GStreamer:                   YES (1.20.3)\n")
    assert not opencv_has_gstreamer("  Video I/O:\n    GStreamer:                   NO\n")
    assert not opencv_has_gstreamer("")


# -- specs ----------------------------------------------------------------------------------------------
def test_unknown_spec_lists_the_valid_forms() -> None:
    with pytest.raises(CameraUnavailable, match=r"unknown camera source 'webcam': expected one of .*opencv:N"):
        open_source("webcam")


def test_bad_opencv_target_is_unavailable() -> None:
    with pytest.raises(CameraUnavailable, match="V4L2 index"):
        open_source("opencv:front")


def test_specs_build_the_right_unopened_sources(tmp_path: Path) -> None:
    assert isinstance(open_source("picamera2"), Picamera2Source)
    assert isinstance(open_source("gst:videotestsrc ! appsink"), OpenCVSource)
    replay = open_source(f"file:{tmp_path}", loop=False)
    assert isinstance(replay, FileSource) and replay.spec == f"file:{tmp_path}" and not replay.loop
    assert "\n" not in replay.describe()


def test_none_spec_means_no_camera() -> None:
    with pytest.raises(CameraUnavailable, match="disabled"):
        open_source("none")


# -- picamera2 (fake module standing in for the CSI camera) -----------------------------------------------
def test_picamera2_open_read_close_delivers_rgb(fake_picamera2: type[FakePicamera2]) -> None:
    source = Picamera2Source(width=320, height=240, fps=30)
    with source:
        frame = source.read()
    camera = fake_picamera2.instances[-1]
    assert camera.config["use_case"] == "video" and camera.config["main"]["size"] == (320, 240)
    assert camera.config["controls"] == {"FrameRate": 30.0}
    assert frame.image.shape == (240, 320, 3) and frame.source == "picamera2"
    assert frame.image[0, 0].tolist() == [0, 0, 255]  # BGR blue became RGB blue
    assert camera.closed and not camera.started


def test_picamera2_context_manager_releases_on_exception(fake_picamera2: type[FakePicamera2]) -> None:
    with pytest.raises(KeyError):
        with Picamera2Source() as source:
            source.read()
            raise KeyError("boom")
    camera = fake_picamera2.instances[-1]
    assert camera.closed and not camera.started


def test_picamera2_capture_failure_is_unavailable(fake_picamera2: type[FakePicamera2]) -> None:
    fake_picamera2.fail_capture = True
    with Picamera2Source() as source:
        with pytest.raises(CameraUnavailable, match="stopped delivering frames: Camera frontend has timed out"):
            source.read()


def test_picamera2_not_installed_explains_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraUnavailable, match="python3-picamera2.*--system-site-packages"):
        Picamera2Source().open()


def test_a_usb_camera_listed_by_libcamera_is_not_taken_for_a_csi_one(
    fake_picamera2: type[FakePicamera2], monkeypatch: pytest.MonkeyPatch
) -> None:
    """libcamera also lists USB cameras and gives them MJPEG/YUYV instead of RGB888: read as BGR the
    colours would be swapped. The source refuses such a camera (so auto-detection moves on to OpenCV)."""
    monkeypatch.setattr(FakePicamera2, "native_format", "MJPEG")
    with pytest.raises(CameraUnavailable, match="delivers MJPEG, not RGB888.*opencv"):
        Picamera2Source().open()
    assert FakePicamera2.instances[-1].closed and not FakePicamera2.instances[-1].started


def test_picamera2_that_fails_to_import_is_unavailable_not_fatal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A venv numpy that Debian's picamera2 was not built for raises ValueError on import, not ImportError:
    it must mean "this camera is unavailable" (auto-detection goes on), never a crashed daemon."""
    package = tmp_path / "picamera2"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")\n')
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CameraUnavailable, match="does not import.*numpy"):
        Picamera2Source().open()


def test_picamera2_without_csi_camera_is_unavailable(fake_picamera2: type[FakePicamera2]) -> None:
    fake_picamera2.cameras = []
    with pytest.raises(CameraUnavailable, match="no CSI camera"):
        Picamera2Source().open()
    assert fake_picamera2.instances == []  # nothing was acquired


# -- auto-detection --------------------------------------------------------------------------------------
def probe(**kwargs) -> tuple[CameraSource | None, list[ProbeResult]]:
    defaults = {"replay_dir": None, "shared_dir": None, "width": 640, "height": 480, "fps": 15.0}
    return probe_auto(**{**defaults, **kwargs})


def test_probe_prefers_picamera2(fake_picamera2: type[FakePicamera2], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto, "list_v4l2_devices", lambda: pytest.fail("V4L2 probed after picamera2 was found"))
    source, results = probe()
    assert isinstance(source, Picamera2Source)
    assert results == [ProbeResult("picamera2", True, "1 CSI camera(s), using 0 (imx708)")]


def test_probe_leaves_a_usb_camera_listed_by_libcamera_to_opencv(
    fake_picamera2: type[FakePicamera2], monkeypatch: pytest.MonkeyPatch
) -> None:
    """libcamera lists USB (UVC) cameras too; picamera2 cannot stream them as RGB888, so a Pi with only a
    USB camera chose picamera2 and retried it forever. USB entries are skipped: OpenCV gets the camera."""
    usb = {"Model": "UVC Camera (046d:0825)", "Num": 0,
           "Id": "/base/scb/pcie@7d500000/pci@0,0/usb@0,0-1:1.0-046d:0825"}
    fake_picamera2.cameras = [usb]
    monkeypatch.setattr(auto, "list_v4l2_devices", lambda: ["/dev/video0"])
    monkeypatch.setattr(auto, "probe_v4l2_device", lambda device, **_: ProbeResult(f"opencv:{device}", True, "a frame"))
    source, results = probe()
    assert [(r.spec, r.ok) for r in results] == [("picamera2", False), ("opencv:/dev/video0", True)]
    assert "1 USB camera(s) left to OpenCV" in results[0].detail
    assert source is not None and source.spec == "opencv:/dev/video0"
    csi = {"Model": "imx708", "Num": 1, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}
    # Picamera2(n) takes the position in global_camera_info() (it maps it to libcamera's "Num" itself):
    # current picamera2 lists CSI cameras first, older versions in libcamera's order
    for listed, position in (([csi, usb], 0), ([usb, csi], 1)):
        fake_picamera2.cameras = listed
        source, results = probe()
        assert isinstance(source, Picamera2Source) and source.camera_num == position
        assert results[0].detail == f"1 CSI camera(s), using {position} (imx708)"
    pcie_uvc = {"Model": "UVC Camera", "Id": "/base/axi/pcie@120000/rp1-0c45:6366"}  # no "usb" in the path
    fake_picamera2.cameras = [pcie_uvc]
    assert probe()[1][0].ok is False


def test_probe_skips_picamera2_without_cameras_then_tries_v4l2_then_replay(
    fake_picamera2: type[FakePicamera2],
    monkeypatch: pytest.MonkeyPatch,
    ham_folder: Path,
    camera_log: pytest.LogCaptureFixture,
) -> None:
    fake_picamera2.cameras = []
    monkeypatch.setattr(auto, "list_v4l2_devices", lambda: ["/dev/video99"])
    source, results = probe(replay_dir=ham_folder)
    assert [(r.spec, r.ok) for r in results] == [
        ("picamera2", False),
        ("opencv:/dev/video99", False),
        (f"file:{ham_folder}", True),
    ]
    assert "lists no CSI camera" in results[0].detail and "does not exist" in results[1].detail
    assert isinstance(source, FileSource) and source.spec == f"file:{ham_folder}"
    messages = [r.getMessage() for r in camera_log.records if r.levelno == logging.INFO]
    assert sum("camera probe" in m for m in messages) == 3
    assert any(f"chose replay of {ham_folder}" in m for m in messages)


def test_probe_falls_back_to_shared_samples(no_hardware: None, tmp_path: Path) -> None:
    source, results = probe(replay_dir=tmp_path / "empty", shared_dir=SHARED)
    assert [(r.spec, r.ok) for r in results] == [
        ("picamera2", False),
        ("opencv:/dev/video*", False),
        (f"file:{tmp_path / 'empty'}", False),
        (f"file:{HAM_IMAGES}", True),
    ]
    assert "not installed" in results[0].detail
    assert isinstance(source, FileSource) and source.path == HAM_IMAGES


def test_probe_finding_nothing_returns_none_and_every_step(
    no_hardware: None, tmp_path: Path, camera_log: pytest.LogCaptureFixture
) -> None:
    source, results = probe(replay_dir=tmp_path, shared_dir=tmp_path / "nowhere")
    assert source is None
    assert [r.ok for r in results] == [False, False, False, False]
    assert any("no camera found, uploads only" in r.getMessage() for r in camera_log.records)
    with pytest.raises(CameraUnavailable, match=r"no camera found: probed picamera2: .*opencv:/dev/video\*"):
        open_source("auto", replay_dir=tmp_path)


def test_v4l2_devices_sort_numerically(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto.glob, "glob", lambda pattern: ["/dev/video10", "/dev/video2", "/dev/video0"])
    assert auto.list_v4l2_devices() == ["/dev/video0", "/dev/video2", "/dev/video10"]


# -- ResilientSource -------------------------------------------------------------------------------------
class FakeClock:
    """Monotonic time that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_resilient_source_survives_folder_vanishing_and_recovers(
    tmp_path: Path, ham_paths: list[Path], camera_log: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "replay"
    folder.mkdir()
    for path in ham_paths[:3]:
        shutil.copy(path, folder / path.name)
    clock = FakeClock()
    attempts: list[float] = []

    def factory() -> CameraSource:
        attempts.append(clock())
        return FileSource(folder)

    with ResilientSource(factory, backoff_initial=0.5, backoff_max=4.0, clock=clock, sleep=clock.sleep) as camera:
        assert camera.state == "ok" and camera.spec == f"file:{folder}"
        assert camera.read() is not None and camera.read() is not None

        shutil.rmtree(folder)
        assert camera.read() is None  # the third file is gone: no exception, just no frame
        went_down = clock()
        assert camera.state == "down" and str(folder) in camera.last_error
        for _ in range(200):  # ~20 s of fake time at <= 0.1 s per read
            assert camera.read() is None
        assert max(clock.sleeps) <= 0.1
        reopen_times = attempts[1:]
        gaps = np.diff([went_down, *reopen_times])  # ~0.5, 1, 2, 4, 4, ... s
        assert camera.reopen_attempts == len(reopen_times) >= 5
        assert 0.45 <= gaps[0] <= 0.55
        assert all(later > earlier for earlier, later in zip(gaps[:4], gaps[1:4]))  # doubling
        assert max(gaps) <= 4.0 * 1.1 + 1e-6  # capped at backoff_max, plus jitter
        assert camera.state == "down"

        folder.mkdir()
        for path in ham_paths[:2]:
            shutil.copy(path, folder / path.name)
        frame = None
        for _ in range(100):
            frame = camera.read()
            if frame is not None:
                break
        assert frame is not None and frame.index == 2  # numbering continues across the reopen
        assert camera.state == "ok" and camera.last_error is None and camera.reopen_attempts == 0

    warnings = [r for r in camera_log.records if r.levelno == logging.WARNING]
    assert warnings and "camera down" in warnings[0].getMessage()
    assert any("camera back" in r.getMessage() for r in camera_log.records if r.levelno == logging.INFO)
    with pytest.raises(RuntimeError, match="closed"):
        camera.read()


def test_resilient_source_never_raises_when_factory_fails(ham_folder: Path) -> None:
    clock = FakeClock()
    camera = ResilientSource(lambda: open_source("bogus"), clock=clock, sleep=clock.sleep)
    assert [camera.read() for _ in range(20)] == [None] * 20
    assert camera.state == "down" and "unknown camera source" in camera.last_error
    assert camera.reopen_attempts >= 1
    camera.close()


def test_resilient_source_recovers_from_picamera2_timeout(fake_picamera2: type[FakePicamera2]) -> None:
    clock = FakeClock()
    with ResilientSource(Picamera2Source, clock=clock, sleep=clock.sleep) as camera:
        assert camera.read() is not None
        fake_picamera2.fail_capture = True
        assert camera.read() is None
        assert fake_picamera2.instances[0].closed  # the broken camera was released before reopening
        fake_picamera2.fail_capture = False
        frames = [camera.read() for _ in range(20)]
        assert any(f is not None for f in frames) and camera.state == "ok"
    assert all(instance.closed for instance in fake_picamera2.instances)


def test_a_replay_without_loop_ends_for_good_under_the_resilient_source(tmp_path: Path) -> None:
    """loop=false means the video plays once: the daemon's camera says "finished" and never restarts it."""
    video = tmp_path / "clip.avi"
    write_video(video, "MJPG", VIDEO_COLOURS)
    clock = FakeClock()
    camera = ResilientSource(lambda: FileSource(video, loop=False), clock=clock, sleep=clock.sleep)
    with camera:
        frames = [camera.read() for _ in range(len(VIDEO_COLOURS) + 40)]
        assert sum(frame is not None for frame in frames) == len(VIDEO_COLOURS)
        assert camera.state == "finished" and "looping is off" in camera.last_error
        assert camera.reopen_attempts == 0


def test_a_camera_that_opens_but_never_delivers_is_retried_ever_more_slowly(ham_folder: Path) -> None:
    """Opening is not working: the backoff grows until a frame arrives, then resets."""
    clock = FakeClock()
    delivering = [False]

    class Mute(FileSource):
        def read(self):
            if not delivering[0]:
                raise CameraUnavailable("opened, but no frame within the timeout")
            return super().read()

    camera = ResilientSource(lambda: Mute(ham_folder), clock=clock, sleep=clock.sleep, backoff_initial=0.5,
                             backoff_max=30)
    with camera:
        for _ in range(400):
            camera.read()
        waits = [s for s in clock.sleeps if s > 0]
        assert camera.reopen_attempts >= 5 and camera._backoff == 30  # doubled to the ceiling, not reset
        delivering[0] = True
        while camera.read() is None:
            pass
        assert camera.state == "ok" and camera.reopen_attempts == 0 and camera._backoff == 0.5
    assert waits
