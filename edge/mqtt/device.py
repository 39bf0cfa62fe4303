"""The device id: random, made once, kept in ``state_dir`` so it survives reboots.

It is never derived from a MAC address, serial number or host name: those identify hardware (and through
it, sometimes a person or a clinic) in other systems. A random id only links messages from this device.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

log = logging.getLogger("edge.mqtt")
DEVICE_ID_FILE = "device_id"
DEVICE_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")


def device_id(state_dir: Path) -> str:
    """The id stored in ``state_dir/device_id``, made (atomically) on first use or if the file is corrupt."""
    path = Path(state_dir) / DEVICE_ID_FILE
    try:
        stored = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        stored = None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("device id file %s unreadable (%s): making a new id", path, exc)
        stored = None
    if stored is not None and DEVICE_ID_PATTERN.match(stored):
        return stored
    if stored is not None:
        log.warning("device id file %s is corrupt: making a new id", path)
    return _write_new(path)


def _write_new(path: Path) -> str:
    new_id = secrets.token_hex(8)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="ascii") as handle:
        handle.write(new_id + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)  # a power cut leaves either no file or the whole id, never half of one
    _fsync_dir(path.parent)
    log.info("new device id %s stored in %s", new_id, path)
    return new_id


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
