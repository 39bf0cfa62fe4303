"""Shared fixtures: the real shared data, a real ImageNet model pack, and an environment with no stray EDGE_ vars."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.inference.manifest import InputSpec, read_labels, write_pack
from edge.paths import PROJECT_ROOT, default_shared_dir

SHARED = Path(os.environ.get("EDGE_SHARED_DIR") or default_shared_dir())
PRETRAINED = SHARED / "pretrained"
HAM_IMAGES = SHARED / "data" / "ham10000" / "images"
IMAGENET_MODEL = PRETRAINED / "tf2_mobilenet_v2_1.0_224_ptq.tflite"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"shared data missing: {path} (set EDGE_SHARED_DIR)")
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No EDGE_* setting leaks in from the caller's shell; state goes to a per-test folder."""
    for key in list(os.environ):
        if key.startswith("EDGE_") or key == "STATE_DIRECTORY":
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("EDGE_SHARED_DIR", str(SHARED))


@pytest.fixture(scope="session")
def imagenet_pack(tmp_path_factory) -> Path:
    """A real pack around the shared ImageNet int8 MobileNetV2 (until the skin model lands)."""
    out = tmp_path_factory.mktemp("packs") / "imagenet-mobilenetv2-int8"
    write_pack(out, model_files={"cpu": _require(IMAGENET_MODEL)}, labels=read_labels(PRETRAINED / "imagenet_labels.txt"),
               name="imagenet-mobilenetv2-int8", version="2.0.0", licence="Apache-2.0",
               input_spec=InputSpec(width=224, height=224))
    return out


@pytest.fixture(scope="session")
def ham_images() -> list[Path]:
    return sorted(_require(HAM_IMAGES).glob("*.jpg"))


def run_edge(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=PROJECT_ROOT)
