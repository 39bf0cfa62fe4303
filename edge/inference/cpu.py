"""CPU backend: the pack's int8 ``model.tflite`` through XNNPACK. Always present; every fallback ends here."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.inference.base import Backend, register_backend
from edge.inference.manifest import ModelPack
from edge.inference.tflite import TFLiteModel


class CpuSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threads: int = Field(2, ge=1, le=16, description="Interpreter threads (XNNPACK); match the CPU cores.")


@register_backend
class CpuBackend(Backend):
    name = "cpu"
    variant = "cpu"

    def __init__(self, pack: ModelPack, settings: CpuSettings) -> None:
        self._model = TFLiteModel(str(pack.verified_path(self.variant)), num_threads=settings.threads)
        self.input_spec, self.output_spec = self._model.input_spec, self._model.output_spec
        self._threads = settings.threads

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        return self._model.invoke(tensor)

    def close(self) -> None:
        self._model.close()

    def describe(self) -> str:
        return f"cpu ({self._model.runtime}, {self._threads} threads)"
