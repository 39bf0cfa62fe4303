"""Telemetry: the device's health as one small JSON message, read from the pipeline and from /proc, /sys.

Only machine facts: counters, model, backend, temperature, memory. No camera path, no network address,
no result: a fleet dashboard needs to know a device is healthy, not who used it.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

from edge import __version__

THERMAL_ROOT = Path("/sys/class/thermal")
CPU_ZONE_TYPES = ("cpu", "soc", "x86_pkg_temp", "cpu-thermal", "cpu_thermal")
PATH_PATTERN = re.compile(r"(?<![\w.])(?:~|\.{0,2})/[^\s:;,'\"()]+")


def without_paths(text: str | None) -> str | None:
    """``text`` with file paths replaced by ``<path>``: a path can hold a user's name (/home/alice/…)."""
    return None if text is None else PATH_PATTERN.sub("<path>", str(text))


def cpu_temperature_c(root: Path = THERMAL_ROOT) -> float | None:
    """The CPU's temperature from the kernel's thermal zones, or None where none is readable (VMs,
    containers). Prefers a zone whose type names the CPU/SoC; else the first readable zone."""
    readings: list[tuple[bool, float]] = []
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip().lower()
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        readings.append((any(name in kind for name in CPU_ZONE_TYPES), millidegrees / 1000.0))
    if not readings:
        return None
    preferred = [value for is_cpu, value in readings if is_cpu]
    return round((preferred or [readings[0][1]])[0], 1)


def memory_rss_mb(status: Path = Path("/proc/self/status")) -> float | None:
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


class FrameRate:
    """Frames per second between two telemetry messages, from the pipeline's frame counter."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._last: tuple[float, int] | None = None

    def update(self, frames: int) -> float:
        now = self._clock()
        previous, self._last = self._last, (now, frames)
        if previous is None or now <= previous[0] or frames < previous[1]:
            return 0.0
        return round((frames - previous[1]) / (now - previous[0]), 2)


def telemetry_payload(health: dict[str, Any], *, fps: float, queue_depth: int, dropped: int,
                      now: float | None = None, minute_resolution: bool = False) -> dict[str, Any]:
    """``health`` is ``Pipeline.health()``; only named fields are copied from it. With ``minute_resolution``
    the time is rounded down to the minute, like the results' own."""
    inference = health.get("inference") or {}
    model = inference.get("model") or {}
    camera = health.get("camera") or {}
    moment = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.timezone.utc)
    if minute_resolution:
        moment = moment.replace(second=0, microsecond=0)
    return {
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "software_version": __version__,
        "status": health.get("status", "unknown"),
        "uptime_s": health.get("uptime_s"),
        "model": {"name": model.get("name"), "version": model.get("version")},
        "backend": inference.get("backend"),
        "fallback_reason": without_paths(inference.get("fallback_reason")),
        "model_error": without_paths(inference.get("error")),
        "camera_state": camera.get("state"),
        "frames": health.get("frames", 0),
        "fps": fps,
        "classifications": health.get("classifications", 0),
        "rejects": dict(health.get("rejects") or {}),
        "queue_depth": queue_depth,
        "dropped": dropped,
        "cpu_temp_c": cpu_temperature_c(),
        "memory_rss_mb": memory_rss_mb(),
    }
