"""Jetson backend: the pack's float ``model.onnx`` through ONNX Runtime's TensorRT or CUDA provider.

On a Jetson, NVIDIA's ``onnxruntime-gpu`` wheel for JetPack provides the providers. Only the providers named
in the settings are used; if none of them is offered by the installed onnxruntime, the backend is
unavailable and says which providers it wanted and which exist.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.errors import BackendFailed, BackendUnavailable
from edge.inference.base import Backend, TensorSpec, register_backend
from edge.inference.manifest import ModelPack

log = logging.getLogger("edge.inference")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


class JetsonSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    providers: list[str] = Field(
        default_factory=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        description="ONNX Runtime execution providers to use, best first.",
    )
    trt_cache_dir: str = Field("", description="TensorRT engine cache folder ('' = state_dir/trt-cache).")


def _import_onnxruntime():
    # ONNX Runtime's pip builds send usage telemetry (a device id, what runs, how often: a count of screenings)
    # to Microsoft from the moment they are imported, and keep a queue of it under ~/.cache/Microsoft. Nothing
    # leaves this device: the switch is read at import, so it is set first, whatever the environment says.
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    try:
        import onnxruntime  # noqa: PLC0415 - optional, hardware-specific dependency
    except ImportError:
        raise BackendUnavailable(
            "onnxruntime is not installed: on a Jetson install NVIDIA's onnxruntime-gpu wheel for your JetPack"
        ) from None
    return onnxruntime


def provider_options(providers: list[str], settings: JetsonSettings) -> list[str | tuple[str, dict]]:
    """The providers for ``InferenceSession``, with TensorRT's engine cache switched on: building the engine
    takes minutes on a Jetson, loading a cached one seconds (ONNX Runtime leaves the cache off by default)."""
    out: list[str | tuple[str, dict]] = []
    for provider in providers:
        if provider == "TensorrtExecutionProvider" and settings.trt_cache_dir:
            Path(settings.trt_cache_dir).mkdir(parents=True, exist_ok=True)
            out.append((provider, {"trt_engine_cache_enable": True, "trt_engine_cache_path": settings.trt_cache_dir}))
        else:
            out.append(provider)
    return out


@register_backend
class JetsonBackend(Backend):
    name = "jetson"
    variant = "jetson"

    def __init__(self, pack: ModelPack, settings: JetsonSettings) -> None:
        ort = _import_onnxruntime()
        offered = ort.get_available_providers()
        providers = [p for p in settings.providers if p in offered]
        if not providers:
            raise BackendUnavailable(
                f"no usable ONNX Runtime provider: wanted {settings.providers}, this onnxruntime offers {offered}"
            )
        if not pack.has_variant(self.variant):
            raise BackendUnavailable(f"model pack {pack.manifest.name} has no ONNX variant (model.onnx)")
        path = pack.verified_path(self.variant)
        try:
            self._session = ort.InferenceSession(str(path), providers=provider_options(providers, settings))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendUnavailable(f"ONNX Runtime could not load {path.name}: {exc}") from None
        self.providers = self._session.get_providers()
        (inp,), (out,) = self._session.get_inputs(), self._session.get_outputs()
        self._input_name = inp.name
        self.input_spec = TensorSpec(tuple(d if isinstance(d, int) else 1 for d in inp.shape), np.dtype(_ORT_TYPES[inp.type]))
        self.output_spec = TensorSpec(tuple(d if isinstance(d, int) else 1 for d in out.shape), np.dtype(_ORT_TYPES[out.type]))
        self._warm_up(path.name)

    def _warm_up(self, model_name: str) -> None:
        """One inference now. With a dynamic batch size, TensorRT builds its engine on the first run, not
        when the session is made: minutes on a Jetson. Done here, that happens at start-up (before READY,
        within the unit's start timeout), not on a patient's capture, where the watchdog would kill it."""
        started = time.monotonic()
        try:
            self.invoke(np.zeros(self.input_spec.shape, self.input_spec.dtype))
        except BackendFailed as exc:
            raise BackendUnavailable(f"ONNX Runtime loaded {model_name} but its first inference failed: {exc}") from None
        log.info("jetson: first inference (builds or loads the TensorRT engine) took %.1f s", time.monotonic() - started)

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        try:
            (output,) = self._session.run(None, {self._input_name: tensor})
        except Exception as exc:
            raise BackendFailed(f"ONNX Runtime run failed: {exc}") from exc
        return np.asarray(output, dtype=np.float32).reshape(-1)

    def close(self) -> None:
        self._session = None

    def describe(self) -> str:
        return f"jetson (onnxruntime {', '.join(self.providers)})"
