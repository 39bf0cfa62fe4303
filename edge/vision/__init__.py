"""Vision stages between the camera and the classifier: preprocessing and the capture quality gate."""

from edge.vision.quality import QualitySettings, assess

__all__ = ["QualitySettings", "assess"]
