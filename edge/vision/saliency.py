"""Which regions drove the prediction: occlusion sensitivity on the deployed (int8) model.

Grey patches slide over the model's view of the lesion; where hiding the skin lowers the predicted class's
probability most is where the model looked. It needs no gradients and runs on the very model the device
uses (~64 invokes: a fraction of a second with a 2 ms invoke), so it explains the real answer, not a twin's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Saliency:
    heatmap: np.ndarray  # (H, W) float32 in [0, 1], aligned with ``view``
    view: np.ndarray  # the RGB view the model saw
    overlay: np.ndarray  # RGB uint8: the view with the heatmap blended in
    target: int
    base_probability: float
    elapsed_ms: float

    def png(self) -> bytes:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(self.overlay, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        return encoded.tobytes()


def occlusion_saliency(view: np.ndarray, score: ScoreFn, target: int | None = None, *, grid: int = 8,
                       patch_fraction: float = 0.25, alpha: float = 0.45) -> Saliency:
    """``view`` is the model's input (after crop/resize; square or not); ``score`` maps an RGB view to
    probabilities."""
    started = time.perf_counter()
    base = score(view)
    target = int(np.argmax(base)) if target is None else target
    height, width = view.shape[:2]
    patch_h, patch_w = (max(2, int(round(side * patch_fraction))) for side in (height, width))
    fill = view.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    rows, cols = np.linspace(patch_h / 2, height - patch_h / 2, grid), np.linspace(patch_w / 2, width - patch_w / 2, grid)
    drops = np.zeros((grid, grid), dtype=np.float32)
    for i, cy in enumerate(rows):
        for j, cx in enumerate(cols):
            top, left = int(round(cy - patch_h / 2)), int(round(cx - patch_w / 2))
            occluded = view.copy()
            occluded[top:top + patch_h, left:left + patch_w] = fill
            drops[i, j] = base[target] - score(occluded)[target]
    drops = np.clip(drops, 0.0, None)
    heatmap = _at_patch_centres(drops, rows, cols, height, width)
    heatmap = np.clip(heatmap / heatmap.max(), 0.0, 1.0) if heatmap.max() > 0 else np.zeros_like(heatmap)
    colour = cv2.cvtColor(cv2.applyColorMap((heatmap * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    weight = (alpha * heatmap)[..., None]
    overlay = (view * (1 - weight) + colour * weight).astype(np.uint8)
    return Saliency(heatmap.astype(np.float32), view, overlay, target, float(base[target]),
                    (time.perf_counter() - started) * 1e3)


def _at_patch_centres(drops: np.ndarray, rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> np.ndarray:
    """The (height, width) map whose value at each patch's centre is that patch's drop, interpolated between
    centres and held constant beyond the outer ones. (A plain resize of the grid would put cell ``i`` at
    ``(i + 0.5) * height / grid``, up to half a cell away from where its patch was: the red spot shown off the
    part of the lesion that mattered.)"""
    def grid_coordinate(centres: np.ndarray, size: int) -> np.ndarray:
        # pixel k spans [k, k + 1): its centre is k + 0.5, in the units the patch centres are given in
        step = centres[1] - centres[0] if len(centres) > 1 else 1.0
        return np.clip((np.arange(size, dtype=np.float32) + 0.5 - centres[0]) / step, 0, len(centres) - 1)

    map_y = np.repeat(grid_coordinate(rows, height)[:, None], width, axis=1).astype(np.float32)
    map_x = np.repeat(grid_coordinate(cols, width)[None, :], height, axis=0).astype(np.float32)
    return np.clip(cv2.remap(drops, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE),
                   0.0, None)
