"""Shared fixtures: the real shared data, a real ImageNet model pack, and an environment with no stray EDGE_ vars."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
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


@pytest.fixture(autouse=True, scope="module")
def no_threads_left_running(request):
    """Every thread a test module starts has ended when the module is done.

    A thread left inside OpenCV or LiteRT when the interpreter exits aborts the whole run ("terminate called
    without an active exception"), long after the test that leaked it; this names the module instead. The
    kiosk's session expiry timer is exempt: a pure-Python daemon timer that only waits (``close_app`` stops
    it in the daemon), and apps made by tests are many. So is the image decoder's one worker, which lives as
    long as the process and is ended by its executor at exit."""
    from edge.kiosk.session import EXPIRY_THREAD
    from edge.vision.decode import DECODER_THREAD_PREFIX

    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 10
    while True:
        left = [t for t in threading.enumerate()
                if t not in before and t.is_alive() and t.name != EXPIRY_THREAD
                and not t.name.startswith(DECODER_THREAD_PREFIX)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if left:
        pytest.fail(f"{request.module.__name__} left threads running: {sorted(t.name for t in left)}")


@pytest.fixture(scope="session")
def imagenet_pack(tmp_path_factory) -> Path:
    """A real pack around the shared ImageNet int8 MobileNetV2 (until the skin model lands)."""
    out = tmp_path_factory.mktemp("packs") / "imagenet-mobilenetv2-int8"
    write_pack(out, model_files={"cpu": _require(IMAGENET_MODEL)}, labels=read_labels(PRETRAINED / "imagenet_labels.txt"),
               name="imagenet-mobilenetv2-int8", version="2.0.0", licence="Apache-2.0",
               input_spec=InputSpec(width=224, height=224))
    return out


@pytest.fixture(scope="session")
def colour_pack(tmp_path_factory, imagenet_pack) -> Path:
    """A pack whose jetson variant is a real ONNX graph classifying the mean colour as red/green/blue."""
    folder = tmp_path_factory.mktemp("colour")
    tiny_onnx_classifier(folder / "tiny.onnx")
    write_pack(folder / "pack", model_files={"cpu": imagenet_pack / "model.tflite", "jetson": folder / "tiny.onnx"},
               labels=["red", "green", "blue"], name="colour", version="1", licence="test",
               input_spec=InputSpec(width=224, height=224))
    return folder / "pack"


def tiny_onnx_classifier(path, n_labels=3):
    """A real ONNX graph (mean colour -> linear -> softmax) to run the jetson code path on ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([[4.0, -2.0, -2.0], [-2.0, 4.0, -2.0], [-2.0, -2.0, 4.0]], dtype=np.float32)[:, :n_labels]
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 224, 224, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, n_labels])],
        initializer=[numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array([1, 2]), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)



@pytest.fixture(scope="session")
def ham_images() -> list[Path]:
    return sorted(_require(HAM_IMAGES).glob("*.jpg"))


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory, imagenet_pack, ham_images):
    """The daemon's wiring minus the server (``test_kiosk_api.build_kiosk``) on the ImageNet pack, one per module."""
    from test_kiosk_api import build_kiosk, no_edge_environment

    with no_edge_environment():
        built = build_kiosk(tmp_path_factory.mktemp("kiosk"), imagenet_pack, ham_images)
    yield built
    built.close()


@pytest.fixture
def replay_folder(tmp_path, ham_images) -> Path:
    """A replay camera's folder: six real HAM10000 images, copied so a test may take it away."""
    folder = tmp_path / "replay"
    folder.mkdir()
    for path in ham_images[:6]:
        shutil.copy(path, folder / path.name)
    return folder


def run_edge(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=PROJECT_ROOT)

