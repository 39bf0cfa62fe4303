"""USB/V4L2 cameras and GStreamer pipelines (Jetson CSI) through OpenCV's VideoCapture.

Spec forms: ``opencv:0`` (V4L2 index), ``opencv:/dev/video2`` (device path, including stable
``/dev/v4l/by-id/...`` links) and ``gst:PIPELINE`` (a GStreamer pipeline ending in ``appsink``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np

from edge.camera.base import CameraSource
from edge.errors import CameraUnavailable

log = logging.getLogger("edge.camera")

OPENCV_PREFIX = "opencv:"
GST_PREFIX = "gst:"

NO_GSTREAMER = (
    "this OpenCV build has no GStreamer support; on Jetson use the system OpenCV (python3-opencv from "
    "JetPack) with a venv made with --system-site-packages"
)


def opencv_has_gstreamer(build_information: str | None = None) -> bool:
    """True when OpenCV was built with GStreamer (the pip wheels are not)."""
    info = cv2.getBuildInformation() if build_information is None else build_information
    match = re.search(r"^\s*GStreamer:\s*(\w+)", info, re.MULTILINE)
    return bool(match) and match.group(1).upper() == "YES"


def parse_device(target: str) -> int | str:
    """``"0"`` -> 0 (V4L2 index), ``"/dev/video2"`` -> the path; anything else is a user error."""
    if target.isdigit():
        return int(target)
    if target.startswith("/"):
        return target
    raise CameraUnavailable(
        f"bad OpenCV camera '{OPENCV_PREFIX}{target}': expected a V4L2 index (opencv:0) "
        "or a device path (opencv:/dev/video0)"
    )


def device_hint(device: int | str) -> str:
    """Why a V4L2 device would not open, in terms the user can act on."""
    path = Path(f"/dev/video{device}" if isinstance(device, int) else device)
    if not path.exists():
        return f"{path} does not exist: is the camera plugged in? List devices with `v4l2-ctl --list-devices`"
    if not os.access(path, os.R_OK | os.W_OK):
        return (
            f"permission denied on {path}: add the user to group video "
            "(sudo usermod -aG video $USER, then log in again)"
        )
    return f"{path} exists but did not open: it may be busy (another process) or not a capture device"


class OpenCVSource(CameraSource):
    """A V4L2 camera or GStreamer pipeline read with ``cv2.VideoCapture``."""

    def __init__(self, spec: str, *, width: int = 640, height: int = 480, fps: float = 15.0) -> None:
        super().__init__(spec)
        self.width = width
        self.height = height
        self.fps = fps
        self._capture: cv2.VideoCapture | None = None
        if spec.startswith(GST_PREFIX):
            self.pipeline: str | None = spec[len(GST_PREFIX):].strip()
            self.device: int | str | None = None
            if not self.pipeline:
                raise CameraUnavailable("empty GStreamer pipeline: expected gst:<pipeline ending in appsink>")
        elif spec.startswith(OPENCV_PREFIX):
            self.pipeline = None
            self.device = parse_device(spec[len(OPENCV_PREFIX):])
        else:
            raise CameraUnavailable(
                f"not an OpenCV camera spec: '{spec}' (expected opencv:N, opencv:/dev/videoN or gst:PIPELINE)"
            )

    def describe(self) -> str:
        if self.pipeline is not None:
            return f"GStreamer pipeline '{self.pipeline}'"
        return f"V4L2 camera {self.device} at {self.width}x{self.height} @ {self.fps:g} fps (requested)"

    def _open(self) -> None:
        if self.pipeline is not None:
            self._capture = self._open_gstreamer(self.pipeline)
        else:
            self._capture = self._open_v4l2(self.device)

    def _open_gstreamer(self, pipeline: str) -> cv2.VideoCapture:
        if not opencv_has_gstreamer():
            raise CameraUnavailable(NO_GSTREAMER)
        capture = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        if not capture.isOpened():
            capture.release()
            raise CameraUnavailable(
                f"GStreamer pipeline did not start: '{pipeline}'. Test it with "
                "`gst-launch-1.0 <pipeline with fakesink instead of appsink>`; it must end in appsink"
            )
        return capture

    def _open_v4l2(self, device: int | str | None) -> cv2.VideoCapture:
        assert device is not None
        capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise CameraUnavailable(f"camera {self.spec} did not open: {device_hint(device)}")
        # MJPG first: most USB cameras give only 5-10 fps above 640x480 in their default YUYV.
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        capture.set(cv2.CAP_PROP_FPS, self.fps)
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps = capture.get(cv2.CAP_PROP_FPS)
        differs = size != (self.width, self.height) or (fps > 0 and fps < self.fps - 0.5)
        (log.warning if differs else log.info)(
            "camera %s negotiated %dx%d @ %.1f fps%s", self.spec, *size, fps,
            f" (asked for {self.width}x{self.height} @ {self.fps:g}: the camera does not offer it)" if differs else "")
        return capture

    def _read_bgr(self) -> np.ndarray:
        assert self._capture is not None
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise CameraUnavailable(f"camera {self.spec} stopped delivering frames (unplugged or pipeline ended?)")
        return frame

    def _close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
