"""``edge bench``: per-stage latency and end-to-end frames/s on a replay source, with in-run baselines.

Every claim is a ratio against something measured in the same process, never an absolute timing assert:
pipeline time over raw ``invoke`` (target overhead <= 20 %), and the float Keras MobileNetV2
``model.predict`` over our int8 ``invoke`` (target >= 8x) when TensorFlow (the ``train`` extra) is installed.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path

import cv2
import numpy as np

from edge.camera import open_source
from edge.config import Settings
from edge.errors import CameraUnavailable
from edge.inference import Classifier, load_pack
from edge.paths import HAM10000_IMAGES
from edge.vision.quality import assess

log = logging.getLogger("edge.bench")
STAGES = ("decode", "quality", "preprocess", "invoke", "postprocess")
WARMUP_FRAMES = 10


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    array = np.asarray(values_ms)
    return {"p50": round(float(np.percentile(array, 50)), 3), "p95": round(float(np.percentile(array, 95)), 3),
            "mean": round(float(array.mean()), 3)}


def replay_spec(settings: Settings) -> str:
    if settings.camera.source.startswith("file:"):
        return settings.camera.source
    folder = settings.camera.replay_dir or settings.shared_dir / HAM10000_IMAGES
    if not Path(folder).is_dir():
        raise CameraUnavailable(f"no replay images for the benchmark at {folder}: pass --source file:PATH")
    return f"file:{folder}"


def camera_sized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Replayed images (HAM10000 is 200x150) scaled to the camera's frame size, so that every stage works on
    what a real camera delivers; the scaling is counted in the decode stage, as the camera's cost."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def measure_pipeline(settings: Settings, classifier: Classifier, frames: int) -> tuple[dict, float, list[float]]:
    """Run ``frames`` frames through every stage; return per-stage ms lists, frames/s and raw invoke ms.

    The baseline (the interpreter alone on one prepared tensor) is timed interleaved with the pipeline,
    one raw invoke per frame, so that load from elsewhere on the machine affects both sides alike.
    """
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    raw: list[float] = []
    busy = 0.0
    source = open_source(replay_spec(settings), width=settings.camera.width, height=settings.camera.height,
                         fps=settings.camera.fps, loop=True)
    size = (settings.camera.width, settings.camera.height)
    with source:
        tensor = classifier.preprocess(camera_sized(source.read().image, size))
        for _ in range(WARMUP_FRAMES):
            classifier.scores(camera_sized(source.read().image, size))
            classifier.backend.invoke(tensor)
        for _ in range(frames):
            t0 = time.perf_counter()
            image = camera_sized(source.read().image, size)
            t1 = time.perf_counter()
            assess(image, settings.quality)
            t2 = time.perf_counter()
            scores = classifier.scores(image)
            t3 = time.perf_counter()
            classifier.backend.invoke(tensor)
            raw.append((time.perf_counter() - t3) * 1e3)
            busy += t3 - t0
            stages["decode"].append((t1 - t0) * 1e3)
            stages["quality"].append((t2 - t1) * 1e3)
            stages["preprocess"].append(scores.preprocess_ms)
            stages["invoke"].append(scores.invoke_ms)
            stages["postprocess"].append(scores.postprocess_ms)
    return stages, frames / busy, raw


def measure_keras_predict(repeats: int = 30) -> list[float] | None:
    """Float Keras MobileNetV2 ``model.predict`` on one 224x224 image; None without TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras  # noqa: PLC0415 - training-only dependency, optional here
    except ImportError:
        return None
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
    batch = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    for _ in range(3):
        model.predict(batch, verbose=0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(batch, verbose=0)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def run_bench(settings: Settings, frames: int = 300, keras_baseline: bool = True) -> dict:
    classifier = Classifier.open(load_pack(settings.inference.model_dir), settings.inference.backend,
                                 settings.inference)
    stages, fps, raw = measure_pipeline(settings, classifier, frames)
    # A pack that averages test-time views runs one invoke per view: the baseline is that many raw invokes.
    invokes = classifier.pack.manifest.decision.test_time_views
    baseline = np.median(raw) * invokes
    classify_path = np.sum([stages[s] for s in ("preprocess", "invoke", "postprocess")], axis=0)
    per_frame = classify_path + np.asarray(stages["quality"])
    report = {
        "model": classifier.model_info.to_json(),
        "backend": classifier.describe_backend(),
        "frames": frames,
        "stages_ms": {name: _percentiles(values) for name, values in stages.items()},
        "raw_invoke_ms": _percentiles(raw),
        "invokes_per_classification": invokes,
        "pipeline_ms_excluding_decode": _percentiles(list(per_frame)),
        "end_to_end_fps": round(fps, 1),
        "classify_overhead_vs_raw_invoke": round(float(np.median(classify_path) / baseline) - 1, 3),
        "frame_overhead_vs_raw_invoke": round(float(np.median(per_frame) / baseline) - 1, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    keras_times = measure_keras_predict() if keras_baseline else None
    if keras_times is not None:
        report["keras_predict_ms"] = _percentiles(keras_times)
        report["int8_speedup_vs_keras_predict"] = round(float(np.median(keras_times) / np.median(raw)), 1)
    classifier.close()
    report["summary"] = _summary(report)
    return report


def _summary(report: dict) -> str:
    lines = [f"model {report['model']['name']} {report['model']['version']} on {report['backend']}, "
             f"{report['frames']} frames", f"{'stage':<12} {'p50 ms':>8} {'p95 ms':>8}"]
    for name, stats in report["stages_ms"].items():
        lines.append(f"{name:<12} {stats['p50']:>8.2f} {stats['p95']:>8.2f}")
    raw = report["raw_invoke_ms"]
    lines += [
        f"{'raw invoke':<12} {raw['p50']:>8.2f} {raw['p95']:>8.2f}   (x{report['invokes_per_classification']} per "
        "classification)",
        f"end-to-end: {report['end_to_end_fps']} frames/s (target >= 30)",
        f"classification overhead (preprocess + postprocess) over raw invoke: "
        f"{report['classify_overhead_vs_raw_invoke']:.1%} (target <= 20 %)",
        f"per-frame overhead including the quality gate: {report['frame_overhead_vs_raw_invoke']:.1%}",
    ]
    if "int8_speedup_vs_keras_predict" in report:
        lines.append(f"int8 invoke vs float Keras predict: {report['int8_speedup_vs_keras_predict']}x faster "
                     f"(target >= 8x; Keras p50 {report['keras_predict_ms']['p50']} ms)")
    else:
        lines.append("Keras baseline skipped (install the train extra for TensorFlow)")
    lines.append(f"peak RSS: {report['peak_rss_mb']} MB")
    return "\n".join(lines)
