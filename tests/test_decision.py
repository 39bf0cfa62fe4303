"""Operating point, abstention and calibration maths: the rules the device applies to every answer."""

from __future__ import annotations

import numpy as np
import pytest

from edge.evaluation.metrics import auroc, balanced_accuracy, expected_calibration_error, fit_temperature, roc_curve
from edge.inference.decision import LOW_CONFIDENCE, OUT_OF_DISTRIBUTION, decide, logsumexp, softmax
from edge.inference.manifest import DecisionSpec, PriorityRule

LABELS = ("akiec", "bcc", "mel", "nv")
SPEC = DecisionSpec(temperature=1.0, priority=(PriorityRule(label="mel", min_probability=0.2),
                                                PriorityRule(label="bcc", min_probability=0.3)),
                    abstain_below=0.5, ood_min_logsumexp=1.0)


def test_melanoma_above_its_threshold_wins_over_a_likelier_benign_answer():
    decision = decide(np.array([0.0, 0.1, 0.25, 0.65]), None, SPEC, LABELS)
    assert LABELS[decision.index] == "mel" and not decision.abstained


def test_priority_order_is_melanoma_first():
    decision = decide(np.array([0.0, 0.4, 0.3, 0.3]), None, SPEC, LABELS)
    assert LABELS[decision.index] == "mel"


def test_low_confidence_abstains_but_keeps_the_argmax():
    decision = decide(np.array([0.45, 0.1, 0.05, 0.4]), None, SPEC, LABELS)
    assert decision.abstained and decision.reason == LOW_CONFIDENCE and LABELS[decision.index] == "akiec"


def test_out_of_distribution_abstains_before_anything_else():
    logits = np.array([-3.0, -3.0, -2.0, -3.0])  # logsumexp ~ -1.2, below 1.0
    decision = decide(softmax(logits), logits, SPEC, LABELS)
    assert decision.abstained and decision.reason == OUT_OF_DISTRIBUTION


def test_confident_answer_passes_through():
    logits = np.array([0.0, 0.0, 0.0, 6.0])
    decision = decide(softmax(logits), logits, SPEC, LABELS)
    assert LABELS[decision.index] == "nv" and not decision.abstained


def test_logsumexp_and_softmax_are_stable():
    big = np.array([1000.0, 999.0])
    assert np.isfinite(logsumexp(big)) and softmax(big).sum() == pytest.approx(1.0)
    assert softmax(np.array([2.0, 0.0]), 2.0)[0] == pytest.approx(softmax(np.array([1.0, 0.0]))[0])


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(4000, 5))
    y = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    fitted = fit_temperature(y, true_logits * 3.0)  # an over-confident model: logits 3x too large
    assert fitted == pytest.approx(3.0, rel=0.1)
    assert expected_calibration_error(y, softmax(true_logits * 3.0, fitted)) < 0.03


def test_auroc_matches_hand_computed_values_and_ties():
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auroc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert np.isnan(auroc(np.array([1, 1]), np.array([0.2, 0.3])))
    fpr, tpr = roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert fpr[-1] == tpr[-1] == 1.0 and np.trapezoid(tpr, fpr) == pytest.approx(0.75)


def test_balanced_accuracy_is_mean_recall_over_present_classes():
    y = np.array([0, 0, 0, 0, 1, 2])
    predicted = np.array([0, 0, 0, 0, 0, 2])
    assert balanced_accuracy(y, predicted, 4) == pytest.approx((1.0 + 0.0 + 1.0) / 3)


def test_manifest_refuses_a_temperature_without_logits(imagenet_pack):
    import json

    from edge.errors import ModelError
    from edge.inference.manifest import load_pack

    manifest = json.loads((imagenet_pack / "model.json").read_text())
    manifest["decision"]["temperature"] = 2.0
    broken = imagenet_pack.parent / "temperature-on-softmax"
    broken.mkdir(exist_ok=True)
    (broken / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="temperature needs logits"):
        load_pack(broken)
