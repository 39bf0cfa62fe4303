"""`edge bench` produces every stage's statistics and the in-run ratios (no timing asserts)."""

from __future__ import annotations

from edge.bench import STAGES, run_bench
from edge.config import load_settings


def test_bench_reports_stages_and_ratios(imagenet_pack):
    settings = load_settings(None, {"inference": {"model_dir": str(imagenet_pack), "backend": "cpu"}})
    report = run_bench(settings, frames=20, keras_baseline=False)
    assert set(report["stages_ms"]) == set(STAGES)
    for stats in report["stages_ms"].values():
        assert 0 <= stats["p50"] <= stats["p95"]
    assert report["end_to_end_fps"] > 0
    assert report["raw_invoke_ms"]["p50"] > 0
    assert "classification overhead" in report["summary"] and report["invokes_per_classification"] == 1
    assert "Keras baseline skipped" in report["summary"]
