"""Kiosk and assistant: time to first token, tokens/s, HTTP classify overhead, resident memory of `edge run`.

    .venv/bin/python benchmarks/bench_kiosk.py [--model DIR] [--questions 5] [--requests 60]

Targets (issue 6), each printed against its baseline from the same run:
* time to first token <= 500 ms for the embedded SmolLM2-135M (with the system prompt cached);
* POST /api/classify p50 within 1.5x of the in-process classify of the same image (interleaved);
* resident memory of `edge run` with the LLM loaded <= 600 MB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from edge.assistant.service import build_assistant
from edge.config import load_settings
from edge.inference import load_pack
from edge.paths import HAM10000_IMAGES, PROJECT_ROOT, default_model_dir
from edge.types import ModelInfo, Quality, Result, Urgency

QUESTIONS = ["What does this result mean?", "Should I worry about this spot?", "What should I do next?",
             "¿Qué significa este resultado?", "Que dois-je faire maintenant ?"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_assistant(model: Path, questions: int) -> dict:
    settings = load_settings(None, {"inference": {"model_dir": str(model)}, "assistant": {"max_tokens": 80}})
    assistant = build_assistant(settings, load_pack(model))
    if assistant.llm is None:
        return {"error": assistant.llm_error}
    probabilities = {"akiec": 0.02, "bcc": 0.03, "bkl": 0.08, "df": 0.01, "mel": 0.06, "nv": 0.79, "vasc": 0.01}
    result = Result(label="nv", display_name="Melanocytic nevus (mole)", confidence=0.79, probabilities=probabilities,
                    urgency=Urgency.ROUTINE, quality=Quality(), model=ModelInfo("bench", "0", "0" * 64),
                    backend="cpu", latency_ms=2.0)
    first_token_ms, rates = [], []
    for question in (QUESTIONS * questions)[:questions]:
        lang = "es" if question.startswith("¿") else "fr" if question.startswith("Que") else "en"
        # As in the kiosk: the result is shown (its grounding is prefilled) and then the person asks.
        assistant.prepare(result, lang)
        # Measured at the LLM owner: the guard releases whole sentences, the model's first token comes first.
        list(assistant.answer(question, result, lang, history=[], symptoms=frozenset()))
        first_token_ms.append(assistant.llm.last_first_token_ms)
        rates.append(assistant.llm.last_tokens_per_s)
    assistant.close()
    return {"first_token_ms_p50": round(float(np.median(first_token_ms)), 1),
            "first_token_ms_max": round(float(np.max(first_token_ms)), 1),
            "tokens_per_s_p50": round(float(np.median(rates)), 1)}


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def bench_http_classify(model: Path, image_path: Path, requests: int) -> dict:
    from edge.kiosk.app import create_app
    from edge.kiosk.server import KioskServer
    from edge.pipeline import Pipeline
    from edge.screening import PipelineScreening

    settings = load_settings(None, {"camera": {"source": "none"}, "inference": {"model_dir": str(model)},
                                    "kiosk": {"port": 0}})
    screening = PipelineScreening(Pipeline.from_settings(settings))
    server = KioskServer(create_app(screening, settings), "127.0.0.1", 0)
    server.start()
    data = image_path.read_bytes()
    body, content_type = multipart(data)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    http_ms, local_ms = [], []
    for i in range(requests + 5):
        started = time.perf_counter()
        connection.request("POST", "/api/classify", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        elapsed_http = (time.perf_counter() - started) * 1e3
        if response.status != 200:
            raise RuntimeError(f"/api/classify answered {response.status}")
        started = time.perf_counter()
        screening.classify_upload(data)
        elapsed_local = (time.perf_counter() - started) * 1e3
        if i >= 5:  # warm-up
            http_ms.append(elapsed_http)
            local_ms.append(elapsed_local)
    server.close()
    return {"http_p50_ms": round(float(np.median(http_ms)), 2), "in_process_p50_ms": round(float(np.median(local_ms)), 2),
            "ratio": round(float(np.median(http_ms) / np.median(local_ms)), 2)}


def bench_rss(model: Path) -> dict:
    port = free_port()
    env = {**os.environ, "EDGE_KIOSK__PORT": str(port), "EDGE_INFERENCE__MODEL_DIR": str(model)}
    daemon = subprocess.Popen([sys.executable, "-m", "edge", "run", "--log-level", "WARNING"], env=env,
                              cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        health = {}
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                health = json.loads(connection.getresponse().read())
                if health.get("llm", {}).get("status") in ("ok", "unavailable"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        time.sleep(2)
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
        return {"rss_mb": round(rss_kb / 1024, 1), "llm": health.get("llm", {}).get("status")}
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    image = sorted((load_settings().shared_dir / HAM10000_IMAGES).glob("*.jpg"))[0]
    llm = bench_assistant(args.model, args.questions)
    print(f"assistant: {json.dumps(llm)}")
    if "first_token_ms_p50" in llm:
        print(f"  time to first token p50 {llm['first_token_ms_p50']} ms (target <= 500 ms), "
              f"{llm['tokens_per_s_p50']} tokens/s")
    http = bench_http_classify(args.model, image, args.requests)
    print(f"POST /api/classify p50 {http['http_p50_ms']} ms vs in-process {http['in_process_p50_ms']} ms: "
          f"ratio {http['ratio']} (target <= 1.5)")
    rss = bench_rss(args.model)
    print(f"edge run resident memory with the LLM {rss['llm']}: {rss['rss_mb']} MB (target <= 600 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
