"""The shipped skin model pack: intact, small, honest about its test numbers, and the device's default."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import HAM_IMAGES, PRETRAINED, run_edge
from edge.evaluation.run import VIEW_NAMES, evaluate
from edge.inference import load_pack
from edge.paths import default_model_dir
from edge.types import Urgency

PACK = default_model_dir()


@pytest.fixture(scope="module")
def pack():
    return load_pack(PACK)


def test_pack_verifies_and_is_small(pack):
    assert all(ok for _, ok, _ in pack.verify_all())
    assert pack.verified_path("cpu").stat().st_size <= 4_000_000
    assert set(pack.manifest.files) >= {"cpu", "jetson"}
    assert pack.manifest.labels == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def test_urgency_licence_and_calibration(pack):
    urgency = {label: pack.urgency_of(label) for label in pack.manifest.labels}
    assert urgency["mel"] == urgency["bcc"] == Urgency.URGENT
    assert urgency["akiec"] == Urgency.SOON
    assert {urgency[k] for k in ("bkl", "df", "nv", "vasc")} == {Urgency.ROUTINE}
    assert "CC-BY-NC-4.0" in pack.manifest.licence
    decision = pack.manifest.decision
    favoured = set(decision.label_weights) or {rule.label for rule in decision.priority}
    assert decision.temperature != 1.0 and favoured == {"mel", "bcc"}
    assert decision.abstain_below > 0 and decision.ood_min_logsumexp is not None
    card = (PACK / "MODEL_CARD.md").read_text()
    for needed in ("CC BY-NC 4.0", "not a diagnosis", "skin tone", "dermoscop"):
        assert needed.lower() in card.lower(), needed
    for plot in ("confusion_matrix.png", "roc_curves.png", "reliability_diagram.png", "training_curves.png"):
        assert (PACK / plot).read_bytes()[:4] == b"\x89PNG", plot


def test_split_is_lesion_disjoint(pack):
    with open(PACK / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[str, set[str]] = {}
    for row in rows:
        groups.setdefault(row["group"], set()).add(row["split"])
    assert len(rows) == 10015 and all(len(splits) == 1 for splits in groups.values())


def test_int8_model_reproduces_its_recorded_test_numbers(pack):
    """Re-run the held-out test split through the device's own code (shipped mode: int8, its test-time views,
    operating point): the numbers recorded in the pack must come back. The floors guard against a regression; the
    project's targets (balanced accuracy >= 0.75) are reported by `edge evaluate` and the model card."""
    with open(PACK / "split.csv", newline="") as handle:
        test = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    views = pack.manifest.decision.test_time_views
    shipped = VIEW_NAMES[views]
    report = evaluate(pack, [HAM_IMAGES / row["image"] for row in test], [row["label"] for row in test],
                      variants=("int8",), view_options=(views,))
    recorded = json.loads((PACK / "evaluation_test.json").read_text())["variants"]["int8"][shipped]
    now = report["variants"]["int8"][shipped]
    for key in ("balanced_accuracy", "mel_sensitivity", "mel_specificity", "ece"):
        assert now["operating_point"][key] == pytest.approx(recorded["operating_point"][key], abs=2e-3), key
    assert now["operating_point"]["balanced_accuracy"] >= 0.65
    assert now["operating_point"]["mel_sensitivity"] >= 0.80


def test_default_model_classifies_a_lesion_and_flags_a_non_lesion(tmp_path):
    lesion = sorted(HAM_IMAGES.glob("*.jpg"))[0]
    result = run_edge("classify", "--json", str(lesion), str(PRETRAINED / "cat.bmp"))
    assert result.returncode == 0, result.stderr
    lesion_record, cat_record = (json.loads(line) for line in result.stdout.splitlines())
    assert lesion_record["model"]["name"] == "ham10000-mobilenetv2-int8"
    assert lesion_record["label"] in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert lesion_record["quality"]["ok"] and lesion_record["screened"] is True
    assert not cat_record["quality"]["ok"] and "not_skin" in cat_record["quality"]["issues"]
    assert cat_record["screened"] is False  # a review: its label and urgency read like a result
    text = run_edge("classify", str(lesion), str(PRETRAINED / "cat.bmp"))
    lesion_line, cat_line = text.stdout.splitlines()
    assert "NOT SCREENED" not in lesion_line and "urgency=" in lesion_line
    assert cat_line.startswith(f"{PRETRAINED / 'cat.bmp'}: NOT SCREENED, retake:") and "urgency=" not in cat_line


def test_calibrate_refits_the_decision_on_val_as_a_new_version(tmp_path):
    """`edge model calibrate` re-fits views, temperature and operating point on the pack's val split through
    the int8 model; the model files stay as they are and the old test report is moved aside, not kept as if
    it described the new decision."""
    import shutil

    copy = tmp_path / "pack"
    shutil.copytree(PACK, copy)
    before = load_pack(copy)
    refused = run_edge("model", "calibrate", str(copy), "--version", before.manifest.version)
    assert refused.returncode != 0 and "version other than" in refused.stderr
    elsewhere = run_edge("model", "calibrate", str(copy), "--version", "9.9.9-test",  # EDGE_SHARED_DIR is honoured
                         env={"EDGE_SHARED_DIR": str(tmp_path / "nowhere")})
    assert elsewhere.returncode != 0 and str(tmp_path / "nowhere") in elsewhere.stderr, elsewhere.stderr
    result = run_edge("model", "calibrate", str(copy), "--version", "9.9.9-test", timeout=300)
    assert result.returncode == 0, result.stderr
    after = load_pack(copy)
    assert after.manifest.version == "9.9.9-test"
    assert after.manifest.files == before.manifest.files
    assert not (copy / "evaluation_test.json").exists()
    assert (copy / f"evaluation_test.{before.manifest.version}.json").exists()
    calibration = json.loads((copy / "training.json").read_text())["calibration"]
    chosen = calibration["candidates"][str(after.manifest.decision.test_time_views)]
    assert f"{chosen['val_balanced_accuracy_operating_point']:.4f}" in result.stdout
    labels = after.manifest.labels
    weights = after.manifest.decision.label_weights  # the re-fit writes today's operating point: weights
    assert not after.manifest.decision.priority and set(weights) == {"mel", "bcc"}
    for label, weight in weights.items():  # each urgent label reaches its val sensitivity target
        assert calibration["operating_point"][label]["weight"] == weight > 1.0
        assert calibration["operating_point"][label]["val_sensitivity"] >= 0.85
        assert label in labels


def test_edge_model_pack_refuses_a_model_that_does_not_match(tmp_path):
    """Three labels for a seven-output model, or the wrong input size: refused at packing time, and nothing
    is left behind (not at the first classification, as a traceback)."""
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    model = PACK / "model.tflite"
    wrong_labels = run_edge("model", "pack", "--tflite", str(model), "--labels", str(labels), "--size", "160",
                            "--name", "x", "--version", "1", "--licence", "test", str(tmp_path / "a"))
    assert wrong_labels.returncode != 0 and "7 outputs but the manifest lists 3 labels" in wrong_labels.stderr
    assert not (tmp_path / "a" / "model.json").exists() and not (tmp_path / "a" / "model.tflite").exists()
    labels.write_text("\n".join(load_pack(PACK).manifest.labels) + "\n")
    wrong_size = run_edge("model", "pack", "--tflite", str(model), "--labels", str(labels), "--size", "224",
                          "--name", "x", "--version", "1", "--licence", "test", str(tmp_path / "b"))
    assert wrong_size.returncode != 0 and "224x224 does not match the model's 160x160" in wrong_size.stderr
    missing = run_edge("model", "pack", "--tflite", str(tmp_path / "none.tflite"), "--labels", str(labels),
                       "--name", "x", "--version", "1", "--licence", "test", str(tmp_path / "c"))
    assert missing.returncode != 0 and "no such model file" in missing.stderr and "Traceback" not in missing.stderr
    right = run_edge("model", "pack", "--tflite", str(model), "--labels", str(labels), "--size", "160",
                     "--name", "x", "--version", "1", "--licence", "test", str(tmp_path / "d"))
    assert right.returncode == 0, right.stderr
