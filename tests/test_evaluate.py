"""`edge evaluate`: which set it scores, how a sample is drawn, and what its referral numbers count."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
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


def test_evaluation_decides_exactly_as_the_device(imagenet_pack, ham_images):
    """The same images through `edge evaluate`'s path and through Classifier.classify give the same answers,
    for a pack that outputs probabilities (ImageNet, softmax) and one that outputs logits (the skin model)."""
    from edge.config import InferenceSettings
    from edge.evaluation.run import collect_outputs, open_variant
    from edge.inference import Classifier
    from edge.types import Quality
    from edge.vision.decode import read_image_file

    images = [read_image_file(path) for path in ham_images[:6]]
    for pack_dir in (imagenet_pack, default_model_dir()):
        pack = load_pack(pack_dir)
        views = pack.manifest.decision.test_time_views
        device = Classifier.open(pack, "cpu", InferenceSettings())
        expected = [device.classify(image, Quality()) for image in images]
        device.close()
        classifier = open_variant(pack, "int8")
        outputs = collect_outputs(classifier, images, views)
        classifier.close()
        labels = list(pack.manifest.labels)
        y = np.array([labels.index(r.label) for r in expected])
        report = score(outputs, y, pack, views)
        assert report["operating_point"]["accuracy"] == 1.0, pack.manifest.name  # every answer the device's
        probabilities = outputs.probabilities(views, pack.manifest.decision.temperature)
        for row, result in zip(probabilities, expected):
            assert row[labels.index(result.label)] == pytest.approx(result.probabilities[result.label], abs=1e-5)
