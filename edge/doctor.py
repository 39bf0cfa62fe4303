"""``edge doctor``: one pass/fail line per part, so an operator sees which part is wrong on a bad day."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge.camera import probe_auto
from edge.config import Settings
from edge.errors import BackendUnavailable, EdgeError, ModelError
from edge.inference.base import AUTO_ORDER, backend_class
from edge.inference.manifest import load_pack
from edge.inference.tflite import runtime_module

# USB ids of the Coral USB Accelerator before and after its firmware is loaded.
CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = False

    def line(self) -> str:
        return f"[{'PASS' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def run_checks(settings: Settings) -> list[Check]:
    return [
        _state_dir(settings.state_dir),
        *_cameras(settings),
        _runtime(),
        _edgetpu_hardware(),
        *_model_and_backends(settings),
    ]


def _state_dir(path: Path) -> Check:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("state_dir", False, f"{path} is not writable: {exc.strerror}", required=True)
    return Check("state_dir", True, f"{path} writable", required=True)


def _cameras(settings: Settings) -> list[Check]:
    cam = settings.camera
    found, probes = probe_auto(replay_dir=cam.replay_dir, shared_dir=settings.shared_dir,
                               width=cam.width, height=cam.height, fps=cam.fps)
    checks = [Check(f"camera {p.spec}", p.ok, p.detail) for p in probes]
    chosen = found.spec if found else "none: uploads only"
    checks.append(Check("camera choice", found is not None, f"auto would use {chosen} (configured: {cam.source})"))
    return checks


def _runtime() -> Check:
    try:
        module = runtime_module()
    except BackendUnavailable as exc:
        return Check("tflite runtime", False, str(exc), required=True)
    return Check("tflite runtime", True, module.__name__.split(".")[0], required=True)


def _edgetpu_hardware() -> Check:
    found = []
    for device in Path("/sys/bus/usb/devices").glob("*"):
        try:
            ids = ((device / "idVendor").read_text().strip(), (device / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in CORAL_USB_IDS:
            found.append(f"USB {ids[0]}:{ids[1]}")
    found += [str(p) for p in Path("/dev").glob("apex_*")]
    if found:
        accessible = all(os.access(p, os.R_OK | os.W_OK) for p in found if p.startswith("/dev/"))
        return Check("edge tpu hardware", accessible, ", ".join(found) + ("" if accessible else " (no permission)"))
    return Check("edge tpu hardware", False, "no Coral USB (1a6e:089a, 18d1:9302) or PCIe (/dev/apex_*) device")


def _model_and_backends(settings: Settings) -> list[Check]:
    try:
        pack = load_pack(settings.inference.model_dir)
    except ModelError as exc:
        return [Check("model pack", False, str(exc), required=True)]
    checks = [Check("model pack", True, f"{pack.manifest.name} {pack.manifest.version} at {pack.root}", required=True)]
    checks += [Check(f"model file {variant}", ok, detail, required=variant == "cpu")
               for variant, ok, detail in pack.verify_all()]
    for name in AUTO_ORDER:
        try:
            backend = backend_class(name)(pack, getattr(settings.inference, name))
        except EdgeError as exc:
            checks.append(Check(f"backend {name}", False, str(exc), required=name == "cpu"))
            continue
        checks.append(Check(f"backend {name}", True, backend.describe(), required=name == "cpu"))
        backend.close()
    return checks
