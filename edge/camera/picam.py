"""Raspberry Pi CSI cameras through picamera2 (libcamera).

``picamera2`` only exists on Raspberry Pi OS (as the Debian package ``python3-picamera2``), so it is
imported inside ``open()``: the package imports, and the tests run, on any machine.
"""

from __future__ import annotations

import importlib
import logging
import re
from types import ModuleType
from typing import Any

import numpy as np

from edge.camera.base import CameraSource
from edge.errors import CameraUnavailable

log = logging.getLogger("edge.camera")

PICAMERA2_SPEC = "picamera2"

NOT_INSTALLED = (
    "picamera2 is not installed: on Raspberry Pi OS install Debian's python3-picamera2 "
    "(sudo apt install python3-picamera2) and create the venv with --system-site-packages"
)
NO_CAMERA = (
    "picamera2 found no CSI camera: check the ribbon cable orientation and seating, the camera_auto_detect "
    "/ dtoverlay lines in /boot/firmware/config.txt, and `rpicam-hello --list-cameras`"
)


def import_picamera2() -> ModuleType:
    """Import picamera2 on demand; a missing install becomes an actionable ``CameraUnavailable``."""
    try:
        return importlib.import_module("picamera2")
    except ImportError as exc:
        raise CameraUnavailable(NOT_INSTALLED) from exc
    except Exception as exc:  # e.g. "numpy.dtype size changed": a venv numpy that Debian's picamera2 cannot use
        raise CameraUnavailable(
            f"picamera2 is installed but does not import ({type(exc).__name__}: {exc}); if numpy is mentioned, "
            "the venv's numpy differs from Debian's: reinstall with ./setup.sh, which keeps numpy 1.x on a Pi"
        ) from exc


def list_csi_cameras(module: ModuleType) -> list[dict[str, Any]]:
    """The cameras libcamera can see (``Picamera2.global_camera_info()``), without opening any."""
    return list(module.Picamera2.global_camera_info())


_UVC_ID = re.compile(r"-[0-9a-f]{4}:[0-9a-f]{4}$", re.IGNORECASE)  # libcamera's UVC ids end in -VID:PID


def csi_only(cameras: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(position, info) of the cameras that are not USB. libcamera lists USB (UVC) cameras too ("usb" in the
    Id's device-tree path, or a -VID:PID suffix), and picamera2 cannot stream them as RGB888: OpenCV takes
    those. The position in ``global_camera_info()`` is what ``Picamera2(camera_num)`` expects (it maps it to
    libcamera's own "Num" itself)."""
    found = []
    for position, info in enumerate(cameras):
        camera_id = str(info.get("Id", "")) if isinstance(info, dict) else ""
        if "usb" in camera_id.lower() or _UVC_ID.search(camera_id):
            continue
        found.append((position, info))
    return found


class Picamera2Source(CameraSource):
    """A CSI camera streaming RGB frames of a fixed size.

    Uses a *video* configuration because we stream continuously (the preview/still configurations trade
    frame rate for resolution). picamera2's ``RGB888`` is BGR in memory, which the base class converts.
    """

    def __init__(self, *, width: int = 640, height: int = 480, fps: float = 15.0, camera_num: int = 0) -> None:
        super().__init__(PICAMERA2_SPEC)
        self.width = width
        self.height = height
        self.fps = fps
        self.camera_num = camera_num
        self._camera: Any = None

    def describe(self) -> str:
        return f"picamera2 CSI camera {self.camera_num} at {self.width}x{self.height} @ {self.fps:g} fps"

    def _open(self) -> None:
        module = import_picamera2()
        if not list_csi_cameras(module):
            raise CameraUnavailable(NO_CAMERA)
        try:
            self._camera = module.Picamera2(self.camera_num)
            config = self._camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": float(self.fps)},
            )
            self._camera.configure(config)
            granted = self._camera.camera_configuration()["main"]["format"]
            if granted == "RGB888":
                self._camera.start()
        except Exception as exc:  # picamera2 raises RuntimeError/IndexError/OSError depending on the failure
            self._close()
            raise CameraUnavailable(
                f"picamera2 could not start CSI camera {self.camera_num}: {exc} "
                "(is another process, e.g. a running rpicam-* command, using the camera?)"
            ) from exc
        if granted != "RGB888":
            # libcamera also lists USB cameras, and gives them their own format (MJPEG, YUYV) instead of the
            # RGB888 asked for: read that way the colours would be wrong or the frames unusable.
            self._close()
            raise CameraUnavailable(
                f"camera {self.camera_num} delivers {granted}, not RGB888: it is probably a USB camera that "
                "libcamera also lists; use it through OpenCV (camera.source = \"opencv:/dev/videoN\")")

    def _read_bgr(self) -> np.ndarray:
        try:
            return self._camera.capture_array("main")
        except Exception as exc:  # the camera vanished or libcamera timed out: let the caller reopen
            raise CameraUnavailable(f"camera {self.spec} stopped delivering frames: {exc}") from exc

    def _close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        for verb in ("stop", "close"):
            try:
                getattr(camera, verb)()
            except Exception:  # keep releasing: a failed stop() must not leave the device held
                log.warning("picamera2 %s() failed while releasing the camera", verb, exc_info=True)
