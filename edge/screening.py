"""The daemon's side of the kiosk's ``Screening`` port, built on the pipeline.

Captures and uploads go through the same quality gate and classifier as the camera loop. Images of results
are held in memory only (bounded), so that the saliency view can be drawn on request; ``forget`` drops them
when the next patient starts. Nothing here writes an image to disk.
"""

from __future__ import annotations

import collections
import threading
import time

import cv2
import numpy as np

from edge.errors import CameraUnavailable
from edge.kiosk.ports import NotFound, Preview, RetakeNeeded
from edge.pipeline import Pipeline
from edge.types import Frame, Result
from edge.vision.decode import decode_image

HELD_RESULTS = 16
PREVIEW_JPEG_QUALITY = 80
PREVIEW_STALE_S = 3.0  # a frame older than this is not a live preview


class PipelineScreening:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._images: collections.OrderedDict[str, tuple[np.ndarray, Result]] = collections.OrderedDict()
        self._overlays: dict[str, bytes] = {}
        self._preview_cache: tuple[int, bytes] | None = None
        self._lock = threading.Lock()

    # -- camera -------------------------------------------------------------------------------------------
    def _live(self):
        """The pipeline's latest step if it is a live picture; None when there is no camera, the camera is down,
        or its last frame is older than ``PREVIEW_STALE_S`` (a frozen image must not say "ready")."""
        latest, pipeline = self.pipeline.latest, self.pipeline
        if pipeline.camera is None or latest is None or latest.frame is None or pipeline.camera.state != "ok":
            return None
        if pipeline.last_frame_at is None or time.monotonic() - pipeline.last_frame_at > PREVIEW_STALE_S:
            return None
        if latest.frame.index < getattr(pipeline.camera, "first_index", 0):  # from before a reopen: the
            return None  # device came back but has not delivered yet, so this picture is not what it sees
        return latest

    def preview(self) -> Preview | None:
        """The latest camera frame as JPEG, or None when there is no live picture (``_live``)."""
        latest = self._live()
        if latest is None:
            return None
        frame = latest.frame
        cached = self._preview_cache
        if cached is None or cached[0] != frame.index:
            ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
            if not ok:
                raise CameraUnavailable("could not encode the preview frame")
            cached = (frame.index, encoded.tobytes())
            self._preview_cache = cached
        return Preview(cached[1], latest.quality, frame.index, frame.timestamp)

    def capture(self) -> Result:
        if self.pipeline.camera is None:
            raise CameraUnavailable("no camera on this device: upload a photo instead")
        latest = self._live()
        if latest is None:
            raise CameraUnavailable("the camera is not delivering frames right now: try again or upload a photo")
        return self._classify(latest.frame)

    # -- uploads ------------------------------------------------------------------------------------------
    def classify_upload(self, data: bytes) -> Result:
        limits = self.pipeline.settings.limits
        image = decode_image(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
        return self._classify(Frame(image=image, source="upload"))

    def _classify(self, frame: Frame) -> Result:
        quality = self.pipeline.assess(frame)
        if not quality.ok:
            raise RetakeNeeded(quality)
        # the model's view is held for saliency instead of the photo: 77 kB, not megabytes
        result, view = self.pipeline.classify_keeping_view(frame, quality)
        with self._lock:
            self._images[result.id] = (view, result)
            while len(self._images) > HELD_RESULTS:
                evicted, _ = self._images.popitem(last=False)
                self._overlays.pop(evicted, None)
        return result

    # -- results ------------------------------------------------------------------------------------------
    def saliency_png(self, result_id: str) -> bytes:
        with self._lock:
            if result_id in self._overlays:
                return self._overlays[result_id]
            held = self._images.get(result_id)
        if held is None:
            raise NotFound(f"no image held for result {result_id}")
        view, result = held
        labels = self.pipeline.classifier.pack.manifest.labels
        png = self.pipeline.saliency(view, labels.index(result.label), cropped=True).png()
        with self._lock:
            if result_id in self._images:
                self._overlays[result_id] = png
        return png

    def forget(self, result_ids: list[str]) -> None:
        with self._lock:
            for result_id in result_ids:
                self._images.pop(result_id, None)
                self._overlays.pop(result_id, None)

    def health(self) -> dict:
        return self.pipeline.health()

    def stats(self) -> dict:
        counters = self.pipeline.counters
        return {"frames": counters.frames, "classifications": counters.classifications,
                "rejects": dict(counters.rejects), "latency_buckets": list(counters.latency_buckets),
                "latency_sum_ms": counters.latency_sum_ms, "held_images": len(self._images),
                "held_bytes": sum(view.nbytes for view, _ in list(self._images.values())),
                "time": time.time()}
