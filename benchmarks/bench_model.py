"""The skin model against the ImageNet int8 MobileNetV2, and the cost of saliency, measured in one run.

    .venv/bin/python benchmarks/bench_model.py [--model models/ham10000-mobilenetv2-int8] [--repeats 300]

Targets (issue 5): our int8 invoke no slower than the ImageNet MobileNetV2 int8 model's (ratio <= 1.0);
the model file <= 4 MB; saliency shown within a second or two. Invokes of the two models are interleaved so
that load from elsewhere on the machine affects both alike.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import imagenet_pack  # noqa: E402

from edge.config import InferenceSettings, load_settings  # noqa: E402
from edge.inference import Classifier, load_pack  # noqa: E402
from edge.paths import HAM10000_IMAGES, default_model_dir  # noqa: E402
from edge.vision.decode import read_image_file  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    settings = load_settings()
    image = read_image_file(sorted((settings.shared_dir / HAM10000_IMAGES).glob("*.jpg"))[0])
    inference = InferenceSettings(cpu={"threads": args.threads})
    with tempfile.TemporaryDirectory() as tmp:
        ours = Classifier.open(load_pack(args.model), "cpu", inference)
        baseline = Classifier.open(load_pack(imagenet_pack(settings.shared_dir, Path(tmp) / "imagenet")), "cpu", inference)
        tensors = {"ours": ours.preprocess(image), "imagenet": baseline.preprocess(image)}
        times: dict[str, list[float]] = {"ours": [], "imagenet": []}
        for _ in range(20):
            ours.backend.invoke(tensors["ours"])
            baseline.backend.invoke(tensors["imagenet"])
        for _ in range(args.repeats):
            for name, classifier in (("ours", ours), ("imagenet", baseline)):
                started = time.perf_counter()
                classifier.backend.invoke(tensors[name])
                times[name].append((time.perf_counter() - started) * 1e3)
        saliency_ms = [ours.saliency(image).elapsed_ms for _ in range(5)]
        size_mb = load_pack(args.model).verified_path("cpu").stat().st_size / 1e6
    ours_p50, base_p50 = np.median(times["ours"]), np.median(times["imagenet"])
    spec = ours.pack.manifest.input
    print(f"skin model ({spec.width}x{spec.height} px): invoke p50 {ours_p50:.2f} ms, "
          f"p95 {np.percentile(times['ours'], 95):.2f} ms")
    print(f"ImageNet MobileNetV2 int8 (224 px): invoke p50 {base_p50:.2f} ms, "
          f"p95 {np.percentile(times['imagenet'], 95):.2f} ms")
    print(f"ratio ours / ImageNet: {ours_p50 / base_p50:.2f} (target <= 1.0)")
    print(f"model.tflite: {size_mb:.2f} MB (target <= 4 MB)")
    print(f"occlusion saliency: p50 {np.median(saliency_ms):.0f} ms over 5 runs (target: within 1-2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
