"""Turn a camera spec into a source, and find a camera when the spec is ``auto``.

Auto-detection reports every step it tried (``ProbeResult``) and logs one line per probe, so "no camera"
is never a mystery: the user sees that picamera2 is missing, /dev/video0 was busy, and the replay
folder was used instead.
"""

from __future__ import annotations

import glob
import logging
import re
from pathlib import Path

from edge.camera.base import CameraSource, ProbeResult
from edge.camera.opencv import GST_PREFIX, OPENCV_PREFIX, OpenCVSource
from edge.camera.picam import PICAMERA2_SPEC, Picamera2Source, csi_only, import_picamera2, list_csi_cameras
from edge.camera.replay import FILE_PREFIX, FileSource, has_images
from edge.errors import CameraUnavailable
from edge.paths import DEVICE_TREE_MODEL, board_model

log = logging.getLogger("edge.camera")

AUTO_SPEC = "auto"
NONE_SPEC = "none"
SHARED_REPLAY_SUBDIR = Path("data/ham10000/images")
EXPECTED_SPECS = "auto, none, picamera2, opencv:N, opencv:/dev/videoN, gst:PIPELINE, file:PATH"


def list_v4l2_devices() -> list[str]:
    """``/dev/video*`` in numeric order (video2 before video10)."""
    def number(path: str) -> tuple[int, str]:
        match = re.search(r"(\d+)$", path)
        return (int(match.group(1)) if match else 1 << 30, path)

    return sorted(glob.glob("/dev/video*"), key=number)


def _has_csi_hardware(device_tree: Path = DEVICE_TREE_MODEL) -> bool:
    """Whether this could have a CSI camera at all: a Raspberry Pi (where a missing picamera2 is a fault)."""
    return "raspberry pi" in board_model(device_tree)


def probe_picamera2(*, width: int, height: int, fps: float) -> tuple[CameraSource | None, ProbeResult]:
    """A CSI camera is usable when picamera2 imports and libcamera lists at least one camera."""
    try:
        listed = list_csi_cameras(import_picamera2())
    except CameraUnavailable as exc:
        return None, ProbeResult(PICAMERA2_SPEC, False, str(exc), absent=not _has_csi_hardware())
    cameras = csi_only(listed)
    if not cameras:
        usb = f" ({len(listed)} USB camera(s) left to OpenCV)" if listed else ""
        return None, ProbeResult(PICAMERA2_SPEC, False, f"picamera2 is installed but lists no CSI camera{usb}",
                                 absent=not _has_csi_hardware())  # on a Pi: a loose ribbon cable, say
    number, info = cameras[0]
    model = info.get("Model", "unknown model") if isinstance(info, dict) else "camera"
    source = Picamera2Source(width=width, height=height, fps=fps, camera_num=number)
    return source, ProbeResult(PICAMERA2_SPEC, True, f"{len(cameras)} CSI camera(s), using {number} ({model})")


def probe_v4l2_device(device: str, *, width: int, height: int, fps: float) -> ProbeResult:
    """Open the device, read one frame and release it: many /dev/video nodes are not capture devices."""
    spec = f"{OPENCV_PREFIX}{device}"
    source = OpenCVSource(spec, width=width, height=height, fps=fps)
    try:
        with source:
            frame = source.read()
    except CameraUnavailable as exc:
        return ProbeResult(spec, False, str(exc))
    return ProbeResult(spec, True, f"delivered a {frame.width}x{frame.height} frame")


def probe_replay(folder: Path, role: str) -> ProbeResult:
    ok = has_images(folder)
    detail = f"{role} {folder} has images" if ok else f"{role} {folder} is missing or has no images"
    return ProbeResult(f"{FILE_PREFIX}{folder}", ok, detail)


def _replay_candidates(replay_dir: Path | None, shared_dir: Path | None) -> list[tuple[Path, str]]:
    candidates = []
    if replay_dir is not None:
        candidates.append((Path(replay_dir), "replay folder"))
    if shared_dir is not None:
        candidates.append((Path(shared_dir) / SHARED_REPLAY_SUBDIR, "shared sample folder"))
    return candidates


def _record(results: list[ProbeResult], result: ProbeResult, quiet: bool = False) -> None:
    results.append(result)
    log.log(logging.DEBUG if quiet else logging.INFO, "camera probe %s: %s (%s)", result.spec,
            "ok" if result.ok else "no", result.detail)


def _probe_sources(
    results: list[ProbeResult],
    *,
    replay_dir: Path | None,
    shared_dir: Path | None,
    width: int,
    height: int,
    fps: float,
    quiet: bool = False,
) -> CameraSource | None:
    source, result = probe_picamera2(width=width, height=height, fps=fps)
    _record(results, result, quiet)
    if source is not None:
        return source
    devices = list_v4l2_devices()
    if not devices:
        _record(results, ProbeResult(f"{OPENCV_PREFIX}/dev/video*", False, "no V4L2 devices (/dev/video*)",
                                     absent=True), quiet)
    for device in devices:
        result = probe_v4l2_device(device, width=width, height=height, fps=fps)
        _record(results, result, quiet)
        if result.ok:
            return OpenCVSource(result.spec, width=width, height=height, fps=fps)
    for folder, role in _replay_candidates(replay_dir, shared_dir):
        result = probe_replay(folder, role)
        _record(results, result, quiet)
        if result.ok:
            return FileSource(folder, loop=True)
    return None


def probe_auto(
    *,
    replay_dir: Path | None = None,
    shared_dir: Path | None = None,
    width: int = 640,
    height: int = 480,
    fps: float = 15.0,
    quiet: bool = False,
) -> tuple[CameraSource | None, list[ProbeResult]]:
    """Find the best camera: picamera2, then V4L2 devices, then a replay folder, else None (uploads only).

    Returns the chosen source (not opened) and every probe made, in order, for health/diagnostics.
    ``quiet``: the probes are logged at DEBUG (a periodic search for a camera plugged in later).
    """
    results: list[ProbeResult] = []
    source = _probe_sources(
        results, replay_dir=replay_dir, shared_dir=shared_dir, width=width, height=height, fps=fps, quiet=quiet
    )
    if source is None:
        log.log(logging.DEBUG if quiet else logging.INFO, "camera auto: no camera found, uploads only")
    else:
        log.info("camera auto: chose %s", source.describe())
    return source, results


def summarise_probes(results: list[ProbeResult]) -> str:
    return "; ".join(f"{r.spec}: {r.detail}" for r in results)


def open_source(
    spec: str,
    *,
    width: int = 640,
    height: int = 480,
    fps: float = 15.0,
    replay_dir: Path | None = None,
    shared_dir: Path | None = None,
    loop: bool = True,
) -> CameraSource:
    """Build the source a spec names, not yet opened; a bad spec or ``none`` raises ``CameraUnavailable``."""
    spec = spec.strip()
    if spec == AUTO_SPEC:
        source, results = probe_auto(
            replay_dir=replay_dir, shared_dir=shared_dir, width=width, height=height, fps=fps
        )
        if source is None:
            raise CameraUnavailable(f"no camera found: probed {summarise_probes(results)}")
        return source
    if spec == PICAMERA2_SPEC:
        return Picamera2Source(width=width, height=height, fps=fps)
    if spec.startswith((OPENCV_PREFIX, GST_PREFIX)):
        return OpenCVSource(spec, width=width, height=height, fps=fps)
    if spec.startswith(FILE_PREFIX) and spec[len(FILE_PREFIX):]:
        return FileSource(Path(spec[len(FILE_PREFIX):]).expanduser(), loop=loop)
    if spec == NONE_SPEC:
        raise CameraUnavailable("camera is disabled (camera source 'none'): uploads only")
    raise CameraUnavailable(f"unknown camera source '{spec}': expected one of {EXPECTED_SPECS}")
