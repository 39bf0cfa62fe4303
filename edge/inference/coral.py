"""Coral Edge TPU backend: the pack's ``model_edgetpu.tflite`` through the ``libedgetpu`` delegate.

The delegate library comes from the Coral apt repository (``libedgetpu1-std``) on the device. When it or
the accelerator is missing, ``load_delegate`` raises and this backend reports exactly that.
"""

from __future__ import annotations

import ctypes

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.errors import BackendUnavailable
from edge.inference.base import Backend, register_backend
from edge.inference.manifest import ModelPack
from edge.inference.tflite import TFLiteModel, runtime_module

EDGETPU_LIBRARY = "libedgetpu.so.1"


class CoralSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: str = Field("", description="'' for the first Edge TPU, or 'usb', 'usb:0', 'pci', 'pci:0'.")
    library: str = Field(EDGETPU_LIBRARY, description="The Edge TPU delegate shared library.")


def load_edgetpu_delegate(settings: CoralSettings):
    """Load the delegate or raise ``BackendUnavailable`` saying what was tried."""
    module = runtime_module()
    options = {"device": settings.device} if settings.device else {}
    try:
        # Open the library with ctypes first: when it is absent, TFLite's Delegate object fails half-built
        # and its destructor prints a spurious traceback; this gives the same OSError without that noise.
        ctypes.CDLL(settings.library)
        return module.load_delegate(settings.library, options)
    except (OSError, ValueError, RuntimeError) as exc:
        where = f" device '{settings.device}'" if settings.device else ""
        raise BackendUnavailable(
            f"Edge TPU delegate {settings.library}{where} did not load ({exc}); install libedgetpu1-std "
            "from the Coral repository and check the accelerator is plugged in (lsusb: 1a6e:089a or 18d1:9302)"
        ) from None


@register_backend
class CoralBackend(Backend):
    name = "coral"
    variant = "coral"

    def __init__(self, pack: ModelPack, settings: CoralSettings) -> None:
        if not pack.has_variant(self.variant):
            raise BackendUnavailable(
                f"model pack {pack.manifest.name} has no Edge TPU variant (model_edgetpu.tflite): "
                "compile model.tflite with edgetpu_compiler and add it to the pack"
            )
        delegate = load_edgetpu_delegate(settings)
        self._model = TFLiteModel(str(pack.verified_path(self.variant)), delegates=[delegate])
        self.input_spec, self.output_spec = self._model.input_spec, self._model.output_spec

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        return self._model.invoke(tensor)

    def close(self) -> None:
        self._model.close()
