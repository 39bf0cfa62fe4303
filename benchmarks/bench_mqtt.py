"""MQTT benchmark: the outbox's sustained results/s to a local mosquitto, and what publishing a result adds
to the classification loop, both as ratios against baselines measured in the same run.

    .venv/bin/python benchmarks/bench_mqtt.py [--results 2000] [--frames 120]

1. Sustained throughput: N results enqueued as fast as possible (durable SQLite, fsync per result) and
   delivered with QoS 1 until the outbox is empty, against raw paho QoS 1 publishing of the same payloads
   (no outbox) to the same broker.
2. Added latency: ``Pipeline.classify`` on real HAM10000 images with the real int8 model, with and without
   the MQTT service subscribed, interleaved frame by frame so both see the same machine load. The durable
   enqueue (one fsync) runs inside ``classify``'s consumer call, so this is its full cost.
3. The loop as deployed: ``Pipeline.run`` on a replay camera at ``camera.fps`` with auto-classify, frames/s
   with and without MQTT.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import load_settings
from edge.inference.manifest import InputSpec, read_labels, write_pack
from edge.mqtt.payloads import encode, result_payload
from edge.mqtt.publisher import MqttService
from edge.pipeline import Pipeline
from edge.types import Frame, ModelInfo, Quality, Result, Urgency
from edge.vision.decode import read_image_file


def mqtt_section(port: int) -> dict:
    """The MQTT section for the benchmark: results are sent at once (the default holds each one until its
    minute has ended, which would measure the hold, not the outbox)."""
    return {"host": "127.0.0.1", "port": port, "results": {"hold_until_minute_end": False}}


def start_broker(folder: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = folder / "mosquitto.conf"
    conf.write_text(f"allow_anonymous true\npersistence false\nuser {getpass.getuser()}\nlistener {port} 127.0.0.1\n")
    process = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.025)
    raise RuntimeError("mosquitto did not start")


def synthetic_result() -> Result:
    return Result(label="nv", display_name="nv", confidence=0.9, probabilities={"nv": 0.9, "mel": 0.1},
                  urgency=Urgency.ROUTINE, quality=Quality(), model=ModelInfo("m", "1", "0" * 64), backend="cpu",
                  latency_ms=10.0)


def raw_paho_rate(port: int, payloads: list[bytes]) -> float:
    """Baseline: QoS 1 publishes straight from paho, no outbox, until every PUBACK arrived."""
    acked = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(20)
    client.on_publish = lambda *a: acked.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    began = time.perf_counter()
    for payload in payloads:
        client.publish("bench/raw/results", payload, qos=1)
    for _ in payloads:
        acked.acquire()
    elapsed = time.perf_counter() - began
    client.disconnect()
    client.loop_stop()
    return len(payloads) / elapsed


def outbox_rate(port: int, state_dir: Path, count: int) -> tuple[float, float]:
    """(enqueue-only results/s, end-to-end results/s until the outbox is empty)."""
    settings = load_settings(None, {"state_dir": str(state_dir), "mqtt": mqtt_section(port)})
    service = MqttService(settings)
    service.start()
    while service.state != "connected":
        time.sleep(0.01)
    result = synthetic_result()
    began = time.perf_counter()
    for _ in range(count):
        service.publish_result(result)
    enqueued = time.perf_counter() - began
    while service.outbox.depth():
        time.sleep(0.001)
    delivered = time.perf_counter() - began
    service.stop()
    return count / enqueued, count / delivered


def classify_overhead(shared: Path, folder: Path, port: int, frames: int) -> dict[str, float]:
    pretrained = shared / "pretrained"
    pack = write_pack(folder / "pack", model_files={"cpu": pretrained / "tf2_mobilenet_v2_1.0_224_ptq.tflite"},
                      labels=read_labels(pretrained / "imagenet_labels.txt"), name="imagenet", version="2.0.0",
                      licence="Apache-2.0", input_spec=InputSpec(width=224, height=224)).root
    settings = load_settings(None, {"state_dir": str(folder / "state"), "camera": {"source": "none"},
                                    "inference": {"model_dir": str(pack), "backend": "cpu"},
                                    "mqtt": mqtt_section(port)})
    images = sorted((shared / "data" / "ham10000" / "images").glob("*.jpg"))[:20]
    loaded = [read_image_file(path, max_bytes=20_000_000, max_pixels=40_000_000) for path in images]
    plain = Pipeline.from_settings(settings)
    with_mqtt = Pipeline.from_settings(settings)
    service = MqttService(settings)
    with_mqtt.subscribe(service.publish_result)
    service.start()
    publish_ms: list[float] = []
    timings: dict[str, list[float]] = {"without": [], "with": []}
    for index in range(frames):
        frame = Frame(loaded[index % len(loaded)], source="bench", index=index)
        for name, pipeline in (("without", plain), ("with", with_mqtt)) if index % 2 else \
                (("with", with_mqtt), ("without", plain)):
            began = time.perf_counter()
            pipeline.classify(frame, Quality())
            timings[name].append((time.perf_counter() - began) * 1000)
    result = synthetic_result()
    for _ in range(200):
        began = time.perf_counter()
        service.publish_result(result)
        publish_ms.append((time.perf_counter() - began) * 1000)
    service.stop()
    plain.close(), with_mqtt.close()
    return {"classify_ms_without": statistics.median(timings["without"]),
            "classify_ms_with": statistics.median(timings["with"]),
            "publish_result_ms_p50": statistics.median(publish_ms),
            "publish_result_ms_p95": statistics.quantiles(publish_ms, n=20)[-1]}


def loop_rate(shared: Path, folder: Path, port: int, frames: int, fps: float) -> dict[str, float]:
    """Frames/s of the real daemon loop (replay camera, quality gate, classify, consumers) at ``fps``."""
    images = folder / "replay"
    images.mkdir(exist_ok=True)
    for path in sorted((shared / "data" / "ham10000" / "images").glob("*.jpg"))[:10]:
        (images / path.name).write_bytes(path.read_bytes())
    rates = {}
    for name, mqtt_on in (("without", False), ("with", True)):
        overrides = {"state_dir": str(folder / f"loop-{name}"), "camera": {"source": f"file:{images}", "fps": fps},
                     "inference": {"model_dir": str(folder / "pack"), "backend": "cpu"},
                     "pipeline": {"auto_classify": True}}
        if mqtt_on:
            overrides["mqtt"] = mqtt_section(port)
        settings = load_settings(None, overrides)
        pipeline = Pipeline.from_settings(settings)
        service = MqttService(settings) if mqtt_on else None
        if service is not None:
            pipeline.subscribe(service.publish_result)
            service.start()
        began = time.perf_counter()
        pipeline.run(threading.Event(), max_frames=frames)
        rates[name] = frames / (time.perf_counter() - began)
        rates[f"classified_{name}"] = pipeline.counters.classifications
        if service is not None:
            service.stop()
        pipeline.close()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--fps", type=float, default=15.0, help="camera.fps for the loop measurement")
    args = parser.parse_args()
    shared = load_settings().shared_dir
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker, port = start_broker(folder)
        try:
            payloads = [encode(result_payload(synthetic_result(), "0" * 16)) for _ in range(args.results)]
            raw = raw_paho_rate(port, payloads)
            enqueue, sustained = outbox_rate(port, folder / "outbox-state", args.results)
            overhead = classify_overhead(shared, folder, port, args.frames)
            loop = loop_rate(shared, folder, port, args.frames, args.fps)
        finally:
            broker.terminate()
            broker.wait(10)
    ratio = overhead["classify_ms_with"] / overhead["classify_ms_without"]
    print(f"outbox sustained: {sustained:.0f} results/s end to end (enqueue alone {enqueue:.0f}/s, fsync each); "
          f"raw paho QoS 1 without outbox: {raw:.0f}/s -> outbox/raw = {sustained / raw:.2f}")
    print(f"classify p50: {overhead['classify_ms_without']:.2f} ms without MQTT, {overhead['classify_ms_with']:.2f} ms "
          f"with -> ratio {ratio:.3f}; publish_result p50 {overhead['publish_result_ms_p50']:.2f} ms, "
          f"p95 {overhead['publish_result_ms_p95']:.2f} ms ({args.frames} frames, interleaved)")
    print(f"daemon loop at camera.fps={args.fps:g}: {loop['without']:.2f} frames/s without MQTT, {loop['with']:.2f} "
          f"with -> ratio {loop['with'] / loop['without']:.3f} ({loop['classified_with']} results published)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
