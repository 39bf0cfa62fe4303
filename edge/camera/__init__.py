"""Camera sources: picamera2 (CSI), OpenCV (V4L2/USB, GStreamer) and file/video replay, plus auto-detect.

Only the pipeline imports this package. Everything here hands out RGB ``edge.types.Frame`` values and
reports failures as ``edge.errors.CameraUnavailable`` with a message the user can act on.
"""

from edge.camera.auto import open_source, probe_auto
from edge.camera.base import CameraSource, ProbeResult
from edge.camera.opencv import OpenCVSource
from edge.camera.picam import Picamera2Source
from edge.camera.replay import FileSource
from edge.camera.resilient import ResilientSource

__all__ = [
    "CameraSource",
    "FileSource",
    "OpenCVSource",
    "Picamera2Source",
    "ProbeResult",
    "ResilientSource",
    "open_source",
    "probe_auto",
]
