"""`edge evaluate`: which set it scores, how a sample is drawn, and what its referral numbers count."""

from __future__ import annotations

import collections
import json

import numpy as np
from conftest import run_edge

from edge.evaluation.command import stratified_sample
from edge.evaluation.run import Outputs, score
from edge.inference import load_pack
from edge.paths import default_model_dir


def test_a_sample_keeps_every_label_in_proportion():
    # Sorted by label, like split.csv: the first N rows would hold one or two labels only.
    pairs = [(f"{label}{i}.jpg", label) for label, n in (("akiec", 30), ("mel", 100), ("nv", 600), ("vasc", 10))
             for i in range(n)]
    sample = stratified_sample(pairs, 74)
    counts = collections.Counter(label for _, label in sample)
    assert len(sample) == 74 and set(counts) == {"akiec", "mel", "nv", "vasc"}
    assert counts["nv"] > counts["mel"] > counts["akiec"] >= counts["vasc"] >= 1
    assert sample == stratified_sample(pairs, 74)  # seeded
    assert stratified_sample(pairs, 10_000) == pairs


def test_referral_counts_every_urgent_answer_for_a_melanoma():
    """A melanoma answered "basal cell carcinoma" is sent to a doctor urgently all the same: it counts."""
    pack = load_pack(default_model_dir())
    labels = list(pack.manifest.labels)
    mel, bcc, nv = (labels.index(name) for name in ("mel", "bcc", "nv"))
    logits = np.zeros((1, 3, len(labels)), dtype=np.float32)
    for row, chosen in enumerate((mel, bcc, nv)):
        logits[0, row, chosen] = 8.0
    report = score(Outputs(logits, invoke_ms=1.0), np.array([mel, mel, nv]), pack, 1)
    assert report["operating_point"]["per_class"]["mel"]["sensitivity"] == 0.5
    assert report["mel_referral_sensitivity"] == 1.0 and report["mel_referral_specificity"] == 1.0
    shipped = pack.manifest.decision.test_time_views
    assert report["decision"] == f"the shipped decision, fitted for {shipped} views, applied to 1"


def test_evaluate_scores_val_by_default_and_refuses_the_test_split():
    refused = run_edge("evaluate", "--split", "test", "--limit", "5")
    assert refused.returncode != 0 and "scored once per pack" in refused.stderr
    run = run_edge("evaluate", "--json", "--no-tta", "--limit", "28")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["n_images"] == 28 and all(n >= 1 for n in report["class_counts"].values())
