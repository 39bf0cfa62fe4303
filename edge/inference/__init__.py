"""Inference: model packs, the backend registry (cpu, coral, jetson) and the classifier with fallback."""

from edge.inference import coral, cpu, jetson  # noqa: F401 - importing registers the backends
from edge.inference.base import AUTO_ORDER, Backend, TensorSpec, registered_backends
from edge.inference.classifier import Classifier, Probe
from edge.inference.manifest import ModelPack, load_pack

__all__ = ["AUTO_ORDER", "Backend", "Classifier", "ModelPack", "Probe", "TensorSpec", "load_pack", "registered_backends"]
