"""Where things live: the project root, the shared data folder, default model packs, the state directory.

Nothing here touches the disk at import time; every function resolves paths when asked so that environment
overrides set by a test or a service unit take effect.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACK_NAME = "ham10000-mobilenetv2-int8"
HAM10000_IMAGES = Path("data") / "ham10000" / "images"
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")  # the board's name on a Raspberry Pi or a Jetson


def board_model(device_tree: Path = DEVICE_TREE_MODEL) -> str:
    """The board's name from the device tree, lower-case ("" on a PC, or when it cannot be read)."""
    try:
        return device_tree.read_text(errors="replace").lower()
    except OSError:
        return ""


def default_shared_dir() -> Path:
    """``../shared`` beside the project root: data and weights that are never committed."""
    return PROJECT_ROOT.parent / "shared"


def default_model_dir() -> Path:
    return PROJECT_ROOT / "models" / DEFAULT_PACK_NAME


def default_state_dir() -> Path:
    """Where the daemon writes everything it keeps.

    Under systemd, ``StateDirectory=edge`` sets ``$STATE_DIRECTORY`` (e.g. /var/lib/edge); for a user
    install we follow the XDG base-directory spec (~/.local/state/edge).
    """
    service_dir = os.environ.get("STATE_DIRECTORY")
    if service_dir:
        return Path(service_dir.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "edge"
