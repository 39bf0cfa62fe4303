"""The backend protocol and the registry that names backends.

Each backend lives in one module holding its settings model and its implementation, and registers itself
under a name (``cpu``, ``coral``, ``jetson``). A backend's constructor either returns a ready backend or
raises ``BackendUnavailable`` saying exactly what it probed and what was missing.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edge.errors import BackendUnavailable
from edge.inference.manifest import ModelPack

# Best first: what ``auto`` tries. The CPU backend is last because it always exists.
AUTO_ORDER = ("coral", "jetson", "cpu")
_REGISTRY: dict[str, type["Backend"]] = {}


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and affine quantisation (``real = (q - zero_point) * scale``) of a tensor."""

    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return np.issubdtype(self.dtype, np.integer) and self.scale > 0

    @property
    def height_width(self) -> tuple[int, int]:
        return int(self.shape[1]), int(self.shape[2])


class Backend(abc.ABC):
    """Runs one model variant of a pack. ``invoke`` takes a preprocessed NHWC batch of one."""

    name: ClassVar[str]
    variant: ClassVar[str]

    input_spec: TensorSpec
    output_spec: TensorSpec

    @abc.abstractmethod
    def __init__(self, pack: ModelPack, settings: Any) -> None: ...

    @abc.abstractmethod
    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model; return the output as float32 scores, dequantised, shape (n_labels,)."""

    def close(self) -> None:
        """Release native resources; idempotent."""

    def describe(self) -> str:
        return self.name


def register_backend(cls: type[Backend]) -> type[Backend]:
    _REGISTRY[cls.name] = cls
    return cls


def backend_class(name: str) -> type[Backend]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackendUnavailable(f"unknown backend '{name}': known are {', '.join(sorted(_REGISTRY))}") from None


def registered_backends() -> list[str]:
    return sorted(_REGISTRY)


def dequantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.quantized:
        return (values.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
    return values.astype(np.float32)
