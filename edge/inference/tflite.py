"""The TFLite runtime, found once: ``ai_edge_litert`` first, ``tflite_runtime`` as a fallback for older devices.

Both expose ``Interpreter`` and ``load_delegate``. ``ai_edge_litert`` runs int8 MobileNetV2 through XNNPACK
(~15 ms on 2 cores, measured); ``tflite_runtime`` 2.14 does not (~94 ms), so it is only a fallback.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

import numpy as np

from edge.errors import BackendFailed, BackendUnavailable
from edge.inference.base import TensorSpec, dequantize

log = logging.getLogger("edge.inference")
RUNTIME_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def runtime_module() -> ModuleType:
    """The first TFLite interpreter module that imports, or ``BackendUnavailable`` naming both."""
    errors = []
    for name in RUNTIME_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise BackendUnavailable("no TFLite runtime: pip install ai-edge-litert (" + "; ".join(errors) + ")")


def _spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]), float(scale), int(zero_point))


class TFLiteModel:
    """One interpreter with its input and output specs; shared by the cpu and coral backends."""

    def __init__(self, model_path: str, *, num_threads: int | None = None, delegates: list | None = None) -> None:
        module = runtime_module()
        try:
            self._interpreter = module.Interpreter(
                model_path=model_path, num_threads=num_threads, experimental_delegates=delegates
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BackendUnavailable(f"TFLite could not load {model_path}: {exc}") from None
        self.runtime = module.__name__.split(".")[0]
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendUnavailable(f"{model_path}: expected one input and one output tensor")
        self.input_spec, self.output_spec = _spec(inputs[0]), _spec(outputs[0])
        self._input_index, self._output_index = inputs[0]["index"], outputs[0]["index"]

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        if self._interpreter is None:
            raise BackendFailed("TFLite invoke failed: the model was closed")
        try:
            self._interpreter.set_tensor(self._input_index, tensor)
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(self._output_index)
        except (ValueError, RuntimeError) as exc:
            raise BackendFailed(f"TFLite invoke failed: {exc}") from exc
        return dequantize(raw.reshape(-1), self.output_spec)

    def close(self) -> None:
        self._interpreter = None
