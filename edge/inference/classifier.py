"""The classifier: a model pack run by the best backend that loads, falling back to the CPU.

``Classifier.open`` tries the requested backend (or, for ``auto``, each in ``AUTO_ORDER``) and records every
probe with its outcome. If a non-CPU backend fails while running, the classifier switches to the CPU
backend, logs why, and keeps the reason for health reports; the caller never sees the failure.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import BackendFailed, BackendUnavailable, ModelError
from edge.inference.base import AUTO_ORDER, Backend, backend_class
from edge.inference.decision import decide, softmax
from edge.inference.manifest import TEST_TIME_VIEW_COUNTS, ModelPack
from edge.vision.color import require_rgb_uint8
from edge.types import Quality, Result, Urgency
from edge.vision.preprocess import Preprocessor

log = logging.getLogger("edge.inference")


@dataclass(frozen=True)
class Probe:
    backend: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Scores:
    """What one inference produced, with per-stage timings in milliseconds. ``logits`` is None for packs
    whose model outputs probabilities."""

    probabilities: np.ndarray
    logits: np.ndarray | None
    preprocess_ms: float
    invoke_ms: float
    postprocess_ms: float

    @property
    def latency_ms(self) -> float:
        return self.preprocess_ms + self.invoke_ms + self.postprocess_ms


def _each_image(tensor: np.ndarray, transform) -> np.ndarray:
    """``transform`` (an OpenCV call on one HWC image) applied to every image of an NHWC batch."""
    if tensor.shape[0] == 1:
        return transform(tensor[0])[np.newaxis]
    return np.stack([transform(image) for image in tensor])


def _flip(code: int):
    # cv2.flip is ~35x faster than a contiguous copy of a reversed numpy view (0.004 vs 0.14 ms per
    # 160x160x3 int8 image); OpenCV drops a single channel axis, so the image's shape is put back.
    return lambda image: cv2.flip(image, code).reshape(image.shape)


def _transpose(image: np.ndarray) -> np.ndarray:
    return cv2.transpose(image).reshape(image.shape[1], image.shape[0], *image.shape[2:])


def tta_views(tensor: np.ndarray, count: int) -> list[np.ndarray]:
    """The first ``count`` test-time augmentation views of an NHWC input: the image, its horizontal,
    vertical and double flips, then the same four of its transpose (the 8 symmetries of a square; a lesion
    seen from above has no up or left). Ordered so that the first 4 are the flips alone."""
    if count not in TEST_TIME_VIEW_COUNTS:
        raise ValueError(f"test-time views must be 1, 4 or 8, not {count}")
    if count == 1:
        return [np.ascontiguousarray(tensor)]
    views: list[np.ndarray] = []
    for base in [tensor] if count < 8 else [tensor, _each_image(tensor, _transpose)]:
        views.append(base)
        views += [_each_image(base, _flip(code)) for code in (1, 0, -1)]  # left-right, upside down, both
    return [np.ascontiguousarray(view) for view in views]


def postprocess(raw: np.ndarray, activation: str, temperature: float) -> tuple[np.ndarray | None, np.ndarray]:
    """View-averaged model outputs -> (logits, or None when the model outputs probabilities; calibrated
    probabilities), for one row ``(k,)`` or many ``(n, k)``: the device and ``edge evaluate`` both use this."""
    if activation == "none":
        return raw, softmax(raw, temperature)
    total = raw.sum(axis=-1, keepdims=True)
    # Quantised softmax outputs do not sum to exactly 1; renormalise so reported probabilities do.
    uniform = np.full_like(raw, 1.0 / raw.shape[-1])
    return None, np.where(total > 0, raw / np.where(total > 0, total, 1.0), uniform)


class Classifier:
    def __init__(self, pack: ModelPack, backend: Backend, probes: list[Probe], backend_settings) -> None:
        self.pack = pack
        self.probes = list(probes)
        self.fallback_reason: str | None = None
        self._backend_settings = backend_settings
        self._use(backend)
        failed = [p for p in probes if not p.ok]
        if failed and backend.name == "cpu":
            self.fallback_reason = "; ".join(f"{p.backend}: {p.detail}" for p in failed)

    @classmethod
    def open(cls, pack: ModelPack, backend: str, backend_settings) -> Classifier:
        """Open ``backend`` ('auto', 'cpu', 'coral', 'jetson'); anything but 'cpu' falls back to 'cpu'.

        ``backend_settings`` has one attribute per backend name (``InferenceSettings``). Raises
        ``ModelError`` / ``BackendUnavailable`` only when even the CPU backend cannot run the pack.
        """
        order = AUTO_ORDER if backend == "auto" else (backend, "cpu") if backend != "cpu" else ("cpu",)
        probes: list[Probe] = []
        for name in order:
            try:
                chosen = backend_class(name)(pack, getattr(backend_settings, name))
            except (BackendUnavailable, ModelError) as exc:
                probes.append(Probe(name, False, str(exc)))
                # Probing for ``auto`` is expected to miss absent hardware; a named backend missing is not.
                log.log(logging.INFO if backend == "auto" else logging.WARNING, "backend %s unavailable: %s", name, exc)
                if name == "cpu":
                    raise
                continue
            try:
                classifier = cls(pack, chosen, probes + [Probe(name, True, chosen.describe())], backend_settings)
            except ModelError as exc:  # this variant does not fit the manifest: the next backend may
                chosen.close()
                probes.append(Probe(name, False, str(exc)))
                log.warning("backend %s unusable: %s", name, exc)
                if name == "cpu":
                    raise
                continue
            log.info("backend %s loaded: %s", name, chosen.describe())
            return classifier
        raise AssertionError("unreachable: cpu is always the last probe")

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def preprocess(self) -> Preprocessor:
        return self._preprocess

    @property
    def backend_name(self) -> str:
        return self._backend.name

    def describe_backend(self) -> str:
        return self._backend.describe()

    def _use(self, backend: Backend) -> None:
        try:  # checked before anything is switched: a failure leaves the classifier as it was
            preprocess = Preprocessor(self.pack.manifest.input, backend.input_spec)
        except ValueError as exc:  # the manifest's input does not fit this variant's model: a bad pack
            raise ModelError(f"model pack {self.pack.manifest.name} ({backend.variant}): {exc}") from None
        n_out = int(np.prod(backend.output_spec.shape))
        if n_out != len(self.pack.manifest.labels):
            raise ModelError(
                f"model pack {self.pack.manifest.name}: model has {n_out} outputs but the manifest lists "
                f"{len(self.pack.manifest.labels)} labels"
            )
        self._backend, self._preprocess = backend, preprocess
        self.model_info = self.pack.info(backend.variant)

    def _fall_back_to_cpu(self, reason: str) -> None:
        """Switch to the CPU backend. Its model file is opened before the failed backend is let go: on an
        accelerator device the CPU file was never loaded, and if it cannot be (a damaged SD card) the
        accelerator stays, to be tried again, and the error says both things."""
        failed = self._backend
        log.error("backend %s failed, falling back to cpu: %s", failed.name, reason)
        cpu = None
        try:
            cpu = backend_class("cpu")(self.pack, self._backend_settings.cpu)
            self._use(cpu)  # switches nothing if the cpu model does not fit the manifest
        except (BackendUnavailable, ModelError) as exc:
            if cpu is not None:
                cpu.close()
            self.fallback_reason = (f"{failed.name} failed while running: {reason}; the cpu fallback cannot "
                                    f"{'load' if cpu is None else 'run'}: {exc}")
            log.error("no cpu fallback: %s", exc)
            raise ModelError(f"classification failed: {self.fallback_reason}") from None
        self.fallback_reason = f"{failed.name} failed while running: {reason}"
        failed.close()
        self.probes.append(Probe("cpu", True, f"fallback after {failed.name} failed"))

    def scores(self, image: np.ndarray, *, cropped: bool = False) -> Scores:
        """Preprocess, invoke and postprocess one RGB image (with the test-time views the pack asks for).
        ``cropped``: ``image`` is already the model-sized view (``Preprocessor.crop_resize``)."""
        start = time.perf_counter()
        tensor = self._preprocess.from_view(image) if cropped else self._preprocess(image)
        tensors = tta_views(tensor, self.pack.manifest.decision.test_time_views)
        after_pre = time.perf_counter()
        try:
            raw = np.mean([self._backend.invoke(t) for t in tensors], axis=0)
        except BackendFailed as exc:
            if self._backend.name == "cpu":
                raise
            self._fall_back_to_cpu(str(exc))
            return self.scores(image, cropped=cropped)
        after_invoke = time.perf_counter()
        logits, probabilities = self._postprocess(raw)
        end = time.perf_counter()
        return Scores(
            probabilities,
            logits,
            (after_pre - start) * 1e3,
            (after_invoke - after_pre) * 1e3,
            (end - after_invoke) * 1e3,
        )

    def _postprocess(self, raw: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(logits or None, calibrated probabilities)."""
        return postprocess(raw, self.pack.manifest.output.activation, self.pack.manifest.decision.temperature)

    def classify(self, image: np.ndarray, quality: Quality) -> Result:
        return self.classify_keeping_view(image, quality)[0]

    def classify_keeping_view(self, image: np.ndarray, quality: Quality) -> tuple[Result, np.ndarray]:
        """The result, and the model-sized view of ``image`` it was made from (``view``), cropped once."""
        started = time.perf_counter()
        view = self.view(image)
        crop_ms = (time.perf_counter() - started) * 1e3
        scores = self.scores(view, cropped=True)
        labels = self.pack.manifest.labels
        decision = decide(scores.probabilities, scores.logits, self.pack.manifest.decision, labels)
        label = labels[decision.index]
        return Result(
            label=label,
            display_name=self.pack.display_name(label),
            confidence=float(scores.probabilities[decision.index]),
            probabilities={name: float(p) for name, p in zip(labels, scores.probabilities)},
            urgency=Urgency.UNSURE if decision.abstained else self.pack.urgency_of(label),
            abstained=decision.abstained,
            abstain_reason=decision.reason,
            quality=quality,
            model=self.model_info,
            backend=self._backend.name,
            latency_ms=crop_ms + scores.latency_ms,
        ), view

    def view(self, image: np.ndarray) -> np.ndarray:
        """The model-sized crop of ``image``: what the model sees, and all that saliency needs later (a
        160x160 view is 77 kB; the photo it came from can be 120 MB)."""
        require_rgb_uint8(image)
        return self._preprocess.crop_resize(image)

    def saliency(self, image: np.ndarray, target: int | None = None, *, cropped: bool = False):
        """Occlusion saliency of ``image`` (or of a ``view`` of it, ``cropped=True``) for ``target``
        (default: the top class) on this classifier."""
        from edge.vision.saliency import occlusion_saliency

        view = image if cropped else self.view(image)
        return occlusion_saliency(view, lambda v: self.scores(v, cropped=True).probabilities, target)

    def health(self) -> dict:
        return {
            "backend": self._backend.name,
            "backend_detail": self._backend.describe(),
            "fallback_reason": self.fallback_reason,
            "probes": [{"backend": p.backend, "ok": p.ok, "detail": p.detail} for p in self.probes],
            "model": self.model_info.to_json(),
        }

    def close(self) -> None:
        self._backend.close()
