"""Replay images and videos as if they came from a camera: ``file:PATH``.

Used for demos, tests and devices without a camera. PATH may be one image (repeated), a folder of images
(sorted, looped; re-listed at every loop so new captures dropped in are picked up) or a video file
(rewound at the end). The source never sleeps: pacing to a frame rate is the caller's job.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.camera.base import CameraSource
from edge.errors import CameraUnavailable, ImageError, SourceFinished
from edge.vision.decode import read_image_file

log = logging.getLogger("edge.camera")

FILE_PREFIX = "file:"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".h264", ".mjpeg"})


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The folder's image files in name order; raises ``CameraUnavailable`` if the folder is unreadable."""
    try:
        return sorted(p for p in folder.iterdir() if is_image(p) and p.is_file())
    except OSError as exc:
        raise CameraUnavailable(f"replay folder {folder} is unreadable: {exc.strerror or exc}") from exc


def has_images(folder: Path) -> bool:
    """Cheap check used by auto-detection: stops at the first image instead of listing thousands."""
    try:
        return folder.is_dir() and any(is_image(p) for p in folder.iterdir())
    except OSError:
        return False


def read_replay_image(path: Path) -> tuple[np.ndarray | None, str]:
    """(BGR pixels of ``path``, "") or (None, why it is not a usable image).

    Read and decoded like an upload (``edge.vision.decode``: the file's size checked before it is read, the
    pixel count from the header before any pixel is allocated, EXIF orientation applied), so a huge or corrupt
    file dropped into a replay folder is skipped, never a crash. A vanished file raises ``CameraUnavailable``.
    """
    try:
        path.stat()
    except OSError as exc:
        raise CameraUnavailable(f"replay file {path} is gone or unreadable: {exc.strerror or exc}") from exc
    try:
        rgb = read_image_file(path)
    except ImageError as exc:
        return None, str(exc)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), ""


class _Reader(Protocol):
    def next_bgr(self) -> np.ndarray: ...

    def close(self) -> None: ...


class _StillImage:
    """One image, handed out again and again (a copy each time, so consumers cannot alter the next)."""

    def __init__(self, path: Path) -> None:
        image, why = read_replay_image(path)
        if image is None:
            raise CameraUnavailable(f"cannot use image {why}")
        self._image = image

    def next_bgr(self) -> np.ndarray:
        return self._image.copy()

    def close(self) -> None:
        pass


class _ImageFolder:
    """The images of a folder in name order; undecodable files are skipped with a warning."""

    def __init__(self, folder: Path, loop: bool) -> None:
        self.folder = folder
        self.loop = loop
        self._files = self._list()
        self._position = 0
        self._skipped: set[Path] = set()  # warned about once: the folder is read again on every loop
        self._pending: np.ndarray | None = self._next_decodable()  # fail at open if nothing decodes

    def _list(self) -> list[Path]:
        files = list_images(self.folder)
        if not files:
            suffixes = " ".join(sorted(IMAGE_SUFFIXES))
            raise CameraUnavailable(f"replay folder {self.folder} has no images ({suffixes})")
        return files

    def _next_path(self) -> Path:
        if self._position >= len(self._files):
            if not self.loop:
                raise SourceFinished(
                    f"replay of {self.folder} finished after {len(self._files)} images (looping is off)"
                )
            self._files = self._list()
            self._position = 0
        path = self._files[self._position]
        self._position += 1
        return path

    def _next_decodable(self) -> np.ndarray:
        for _ in range(len(self._files)):
            path = self._next_path()
            image, why = read_replay_image(path)
            if image is not None:
                return image
            (log.debug if path in self._skipped else log.warning)("replay: skipping %s", why)
            self._skipped.add(path)
        raise CameraUnavailable(f"none of the {len(self._files)} images in {self.folder} could be decoded")

    def next_bgr(self) -> np.ndarray:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        return self._next_decodable()

    def close(self) -> None:
        self._files = []


class _VideoFile:
    """A video decoded with OpenCV's FFMPEG backend; reopened from the start when it ends and looping."""

    def __init__(self, path: Path, loop: bool) -> None:
        self.path = path
        self.loop = loop
        self._capture = self._open()

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise CameraUnavailable(f"cannot open video {self.path}: unreadable or unsupported codec")
        return capture

    def next_bgr(self) -> np.ndarray:
        ok, frame = self._capture.read()
        if ok:
            return frame
        if not self.loop:
            raise SourceFinished(f"video {self.path} ended (looping is off)")
        # Reopening is more dependable than seeking to frame 0, which some codecs/containers ignore.
        self._capture.release()
        self._capture = self._open()
        ok, frame = self._capture.read()
        if not ok:
            raise CameraUnavailable(f"video {self.path} has no readable frames")
        return frame

    def close(self) -> None:
        self._capture.release()


def open_reader(path: Path, loop: bool) -> _Reader:
    """Pick the reader for what ``path`` is now (a path can change from file to folder between opens)."""
    if path.is_dir():
        return _ImageFolder(path, loop)
    if not path.exists():
        raise CameraUnavailable(f"replay path {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _StillImage(path)
    if suffix in VIDEO_SUFFIXES:
        return _VideoFile(path, loop)
    raise CameraUnavailable(
        f"cannot replay {path}: expected an image ({' '.join(sorted(IMAGE_SUFFIXES))}), "
        f"a folder of images, or a video ({' '.join(sorted(VIDEO_SUFFIXES))})"
    )


class FileSource(CameraSource):
    """``file:PATH``: an image, a folder of images or a video, replayed as a camera."""

    def __init__(self, path: Path | str, *, loop: bool = True) -> None:
        self.path = Path(path)
        super().__init__(f"{FILE_PREFIX}{self.path}")
        self.loop = loop
        self._reader: _Reader | None = None

    def describe(self) -> str:
        return f"replay of {self.path}{' (looping)' if self.loop else ''}"

    def _open(self) -> None:
        self._reader = open_reader(self.path, self.loop)

    def _read_bgr(self) -> np.ndarray:
        assert self._reader is not None
        return self._reader.next_bgr()

    def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
