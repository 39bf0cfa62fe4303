"""Pipeline benchmark: per-stage p50/p95, frames/s, overhead over raw invoke, speed-up over float Keras.

    .venv/bin/python benchmarks/bench_pipeline.py [--model DIR] [--frames 300]

Without --model it builds a pack around ../shared/pretrained's ImageNet int8 MobileNetV2 in a temporary
folder (the same architecture and quantisation as the skin model). Same code as `edge bench`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from edge.bench import run_bench
from edge.config import load_settings
from edge.inference.manifest import InputSpec, read_labels, write_pack


def imagenet_pack(shared: Path, out: Path) -> Path:
    pretrained = shared / "pretrained"
    write_pack(out, model_files={"cpu": pretrained / "tf2_mobilenet_v2_1.0_224_ptq.tflite"},
               labels=read_labels(pretrained / "imagenet_labels.txt"), name="imagenet-mobilenetv2-int8",
               version="2.0.0", licence="Apache-2.0", input_spec=InputSpec(width=224, height=224))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--no-keras", action="store_true")
    args = parser.parse_args()
    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or imagenet_pack(settings.shared_dir, Path(tmp) / "pack")
        settings = load_settings(None, {"inference": {"model_dir": str(model)}})
        print(run_bench(settings, frames=args.frames, keras_baseline=not args.no_keras)["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
