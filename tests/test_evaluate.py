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


def test_a_set_without_melanomas_gives_valid_json_and_unsure_is_also_scored_as_a_miss():
    """An external set with no melanoma made `--json` print a bare NaN (invalid JSON); "unsure" answers were
    scored as their closest label without saying so."""
    pack = load_pack(default_model_dir())
    labels = list(pack.manifest.labels)
    nv, bkl = labels.index("nv"), labels.index("bkl")
    logits = np.zeros((1, 2, len(labels)), dtype=np.float32)
    logits[0, 0, nv] = 8.0  # a confident nevus
    logits[0, 1, bkl] = 8.0  # a confident benign keratosis
    report = score(Outputs(logits, invoke_ms=1.0), np.array([nv, bkl]), pack, 1)
    assert report["mel_referral_sensitivity"] is None  # no melanoma in the set: no figure, not NaN
    assert report["mel_referral_specificity"] == 1.0
    json.loads(json.dumps(report, allow_nan=False))  # strict JSON: no NaN anywhere
    assert report["balanced_accuracy_unsure_counted_wrong"] == report["operating_point"]["balanced_accuracy"] == 1.0
    # an answer the device marks "unsure": its closest label is shown and scored, or counted as a miss
    close_call = np.full((1, 1, len(labels)), -10.0, dtype=np.float32)
    close_call[0, 0, nv], close_call[0, 0, bkl], close_call[0, 0, labels.index("vasc")] = 2.0, 1.95, 1.9
    unsure = score(Outputs(close_call, invoke_ms=1.0), np.array([nv]), pack, 1)
    assert unsure["abstain_rate"] == 1.0 and unsure["operating_point"]["balanced_accuracy"] == 1.0
    assert unsure["balanced_accuracy_unsure_counted_wrong"] == 0.0
    # an "unsure" answer on the last label (vasc) must count as a miss too (-1 once indexed the last column)
    vasc = labels.index("vasc")
    last = np.full((1, 2, len(labels)), -10.0, dtype=np.float32)
    last[0, 0, vasc], last[0, 0, nv], last[0, 0, bkl] = 2.0, 1.95, 1.9  # unsure, closest vasc
    last[0, 1, nv] = 8.0  # a confident, correct nevus
    both = score(Outputs(last, invoke_ms=1.0), np.array([vasc, nv]), pack, 1)
    assert both["abstain_rate"] == 0.5 and both["balanced_accuracy_unsure_counted_wrong"] == 0.5


def test_evaluate_reads_what_spreadsheets_and_folders_hold(imagenet_pack, tmp_path, ham_images):
    """A BOM (Excel's CSV UTF-8), spaces in the header, nested label folders and a .DS_Store: scored, not
    refused or silently skipped; the quality gate's verdict is reported next to the scores."""
    import shutil

    pack = load_pack(imagenet_pack)
    label = pack.manifest.labels[0]
    folder = tmp_path / "set"
    (folder / label / "batch2").mkdir(parents=True)
    shutil.copy(ham_images[0], folder / label / "a.jpg")
    shutil.copy(ham_images[1], folder / label / "batch2" / "b.jpg")
    (folder / label / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    run = run_edge("evaluate", "--json", "--no-tta", "--model", str(imagenet_pack), "--folder", str(folder))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["n_images"] == 2 and report["quality_gate"]["refused"] >= 0 and "scoring" in report
    table = tmp_path / "set.csv"
    table.write_text(f"\ufeffimage, label\n{label}/a.jpg,{label}\n", encoding="utf-8")
    run = run_edge("evaluate", "--json", "--no-tta", "--model", str(imagenet_pack), "--csv", str(table),
                   "--images", str(folder))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["n_images"] == 1
