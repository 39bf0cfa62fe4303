"""``edge evaluate``: score a model pack on a labelled set, through the same code the device runs.

Each variant of the pack is run by its real backend: the int8 ``model.tflite`` on the CPU backend, and the
float ``model.onnx`` (the Jetson export) on ONNX Runtime's CPU provider. Preprocessing, temperature and the
operating point are the device's own (``Classifier``, ``decision``), so the numbers are what a user gets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import InferenceSettings
from edge.errors import EdgeError
from edge.evaluation.metrics import summarise
from edge.inference import Classifier, ModelPack
from edge.inference.classifier import postprocess, tta_views
from edge.inference.decision import OUT_OF_DISTRIBUTION, decide_batch
from edge.inference.manifest import TEST_TIME_VIEW_COUNTS, view_counts
from edge.types import Urgency
from edge.vision.decode import read_image_file

log = logging.getLogger("edge.evaluate")


VIEW_NAMES = {1: "plain", 4: "flips", 8: "dihedral"}  # test-time views -> the report's key


@dataclass
class Outputs:
    """Raw model outputs for a set: logits (n, k) per test-time view, and the mean invoke time."""

    logits_per_view: np.ndarray  # (views, n, k), in ``test_time_views`` order: logits, or probabilities
    invoke_ms: float
    activation: str = "none"  # the pack's output activation: "none" means the model outputs logits

    def logits(self, views: int) -> np.ndarray:
        """The view-averaged raw outputs (logits when ``activation`` is "none")."""
        if views > len(self.logits_per_view):
            raise ValueError(f"{views} views asked for, {len(self.logits_per_view)} collected")
        return self.logits_per_view[:views].mean(axis=0)

    def probabilities(self, views: int, temperature: float) -> np.ndarray:
        """As the device computes them (``classifier.postprocess``)."""
        return postprocess(self.logits(views), self.activation, temperature)[1]

    def decision_logits(self, views: int) -> np.ndarray | None:
        """What the device hands ``decide`` as logits: None for a model that outputs probabilities (so no
        out-of-distribution check on them)."""
        return postprocess(self.logits(views), self.activation, 1.0)[0]


def open_variant(pack: ModelPack, variant: str, threads: int = 2) -> Classifier:
    """The classifier for one pack variant: 'int8' (cpu backend) or 'float' (ONNX on the CPU provider)."""
    settings = InferenceSettings(cpu={"threads": threads}, jetson={"providers": ["CPUExecutionProvider"]})
    backend = {"int8": "cpu", "float": "jetson"}[variant]
    classifier = Classifier.open(pack, backend, settings)
    if classifier.backend_name != backend:
        raise EdgeError(f"{variant} variant could not be opened: {classifier.fallback_reason}")
    return classifier


def collect_outputs(classifier: Classifier, images: list[np.ndarray], views: int) -> Outputs:
    """Logits of every image under the first ``views`` test-time views (the ones ``Classifier.scores`` uses)."""
    rows = np.zeros((views, len(images), len(classifier.pack.manifest.labels)), dtype=np.float32)
    invoke_total = 0.0
    for i, image in enumerate(images):
        tensor = classifier.preprocess(image)
        for f, view in enumerate(tta_views(tensor, views)):
            started = time.perf_counter()
            rows[f, i] = classifier.backend.invoke(view)
            invoke_total += time.perf_counter() - started
    return Outputs(rows, invoke_total / (len(images) * views) * 1e3, classifier.pack.manifest.output.activation)


def load_images(paths: list[Path]) -> list[np.ndarray]:
    return [read_image_file(path) for path in paths]


def score(outputs: Outputs, y: np.ndarray, pack: ModelPack, views: int) -> dict:
    labels = list(pack.manifest.labels)
    spec = pack.manifest.decision
    p = outputs.probabilities(views, spec.temperature)
    uncalibrated = outputs.probabilities(views, 1.0)
    decisions = decide_batch(p, outputs.decision_logits(views), spec, pack.manifest.labels)
    decided = np.array([d.index for d in decisions])
    abstained = np.array([d.abstained for d in decisions])
    ood = np.array([d.reason == OUT_OF_DISTRIBUTION for d in decisions])
    argmax = summarise(y, p, p.argmax(axis=1), labels)
    operating = summarise(y, p, decided, labels)
    # An "unsure" answer is scored as the label it shows as closest (the device's `label`); counted as a
    # miss instead, the balanced accuracy is this:
    correct = (decided == y) & ~abstained
    unsure_as_miss = float(np.mean([correct[y == c].mean() for c in np.unique(y)])) if len(y) else float("nan")
    mel = labels.index("mel") if "mel" in labels else None
    result = {
        "argmax": _compact(argmax),
        "operating_point": _compact(operating),
        "ece_before_temperature": summarise(y, uncalibrated, uncalibrated.argmax(axis=1), labels)["ece"],
        "abstain_rate": float(abstained.mean()),
        "balanced_accuracy_unsure_counted_wrong": round(unsure_as_miss, 4),
        "out_of_distribution_rate": float(ood.mean()),
        "invoke_ms": round(outputs.invoke_ms, 3),
    }
    fitted_for = spec.test_time_views
    result["decision"] = (f"fitted for {views} views" if views == fitted_for else
                          f"the shipped decision, fitted for {fitted_for} views, applied to {views}")
    if mel is not None:
        # Sent to a clinician promptly: an answer whose next step is urgent (melanoma, but also BCC), or unsure.
        urgent = np.array([pack.urgency_of(label) == Urgency.URGENT for label in labels])
        referred = urgent[decided] | abstained
        melanomas, others = y == mel, y != mel  # a set may have none of one or the other: no figure, not NaN
        result["mel_referral_sensitivity"] = float(referred[melanomas].mean()) if melanomas.any() else None
        result["mel_referral_specificity"] = float(1 - referred[others].mean()) if others.any() else None
    return result


def _compact(summary: dict) -> dict:
    def clean(value):
        if isinstance(value, float):
            return None if np.isnan(value) else round(value, 4)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return clean(summary)


SCORING_NOTE = ("every image is scored, including those the device's quality gate would send back for a retake "
                "(see quality_gate); an 'unsure' answer is scored as the label it shows as closest, and "
                "balanced_accuracy_unsure_counted_wrong counts it as a miss")


def quality_gate_report(images: list[np.ndarray], y: np.ndarray, labels: list[str], quality) -> dict:
    """How many images the device's quality gate (``quality``: its settings) would refuse, by class and reason.
    They are scored anyway: the set's labels are known good, the gate guards a live camera."""
    from edge.vision.quality import assess

    verdicts = [assess(image, quality) for image in images]
    refused = np.array([not v.ok for v in verdicts])
    reasons: dict[str, int] = {}
    for verdict in verdicts:
        for issue in verdict.issues:
            reasons[issue.value] = reasons.get(issue.value, 0) + 1
    return {"refused": int(refused.sum()), "rate": round(float(refused.mean()), 4) if len(y) else None,
            "by_class": {label: int(refused[y == i].sum()) for i, label in enumerate(labels) if (y == i).any()},
            "by_reason": reasons}


def evaluate(pack: ModelPack, paths: list[Path], labels: list[str], *, variants=("int8", "float"),
             view_options=TEST_TIME_VIEW_COUNTS, threads: int = 2, raw: dict | None = None,
             quality=None) -> dict:
    """Score every available variant under each count of test-time views (``VIEW_NAMES``); variants the
    pack lacks are reported as such. ``shipped`` names the views the pack's decision uses. View counts the
    pack's input does not allow (8 transposes, so only a square input has them) are left out.

    ``raw``, when given, receives ``{variant: (y, Outputs)}`` for plots.
    """
    index = {label: i for i, label in enumerate(pack.manifest.labels)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise EdgeError(f"labels {unknown} are not in model {pack.manifest.name}")
    y = np.array([index[label] for label in labels])
    view_options = tuple(v for v in view_options if v in view_counts(pack.manifest.input))
    images = load_images(paths)
    report: dict = {"model": pack.info().to_json(), "n_images": len(paths),
                    "class_counts": {k: int((y == i).sum()) for k, i in index.items()},
                    "scoring": SCORING_NOTE, "variants": {}}
    if quality is not None:
        report["quality_gate"] = quality_gate_report(images, y, list(pack.manifest.labels), quality)
    for variant in variants:
        try:
            classifier = open_variant(pack, variant, threads)
        except EdgeError as exc:
            report["variants"][variant] = {"error": str(exc)}
            continue
        outputs = collect_outputs(classifier, images, max(view_options))
        report["variants"][variant] = {VIEW_NAMES[n]: score(outputs, y, pack, n) for n in view_options}
        report["shipped"] = VIEW_NAMES[pack.manifest.decision.test_time_views]
        if raw is not None:
            raw[variant] = (y, outputs)
        classifier.close()
    return report
