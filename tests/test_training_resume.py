"""`edge train` stopped and started again: it resumes the same run from where it was, and only that run.

Real (tiny) training with TensorFlow, the optional `train` extra: skipped where it is not installed (CI).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edge.paths import PROJECT_ROOT

pytest.importorskip("tensorflow")

TINY = ["--limit", "48", "--input-size", "96", "--load-short-side", "96", "--batch-size", "8",
        "--warmup-epochs", "1", "--finetune-epochs", "2", "--representative-images", "8", "--no-progress"]


def edge_train(work, out, *extra) -> list[str]:
    return [sys.executable, "-m", "edge", "train", "--work", str(work), "--out", str(out), *TINY, *extra]


def test_a_run_stopped_between_warmup_and_finetuning_resumes_from_the_warmup(tmp_path):
    work, out = tmp_path / "work", tmp_path / "pack"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(edge_train(work, out), cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in first.stdout:  # stop it once the warm-up is recorded as done, before a fine-tuning epoch is
        seen.append(line)
        if "warmup epoch 1/1" in line:
            state = work / "state.json"
            deadline = time.monotonic() + 30
            while '"phase": "finetune"' not in (state.read_text() if state.exists() else ""):
                assert time.monotonic() < deadline, "the warm-up was never recorded as done"
                time.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            break
    first.wait(60)
    assert any("warmup epoch 1/1" in line for line in seen), "".join(seen[-20:])
    assert '"epoch": 0' in (work / "state.json").read_text()  # killed between the two phases
    assert not out.exists()  # nothing half-written: the pack is built aside and moved in at the end

    # Training into an existing pack keeps what training does not make (fact sheets, model card) and moves
    # the old test report aside: it describes the old model.
    (out / "facts").mkdir(parents=True)
    (out / "facts" / "x.en.md").write_text("kept\n")
    (out / "model.json").write_text(json.dumps({"version": "0.9"}))
    (out / "evaluation_test.json").write_text("{}")
    second = subprocess.run(edge_train(work, out), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=900, check=False)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert "resuming: finetune starts from the finished warmup" in log
    assert "warmup epoch" not in log and "finetune epoch 2/2" in log
    assert json.loads((out / "model.json").read_text())["version"] != "0.9"
    assert (out / "facts" / "x.en.md").read_text() == "kept\n" and not (out / "evaluation_test.json").exists()
    assert (out / "evaluation_test.0.9.json").exists() and not list(tmp_path.glob(".pack.building*"))

    # the same folder does not resume a different run (here: other settings)
    other = subprocess.run(edge_train(work, tmp_path / "other", "--dropout", "0.5"), cwd=PROJECT_ROOT, env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert other.returncode != 0 and "holds another training run" in other.stderr
