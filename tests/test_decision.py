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


WEIGHTED = DecisionSpec(temperature=1.0, label_weights={"mel": 3.0, "bcc": 2.0}, abstain_below=0.5)


def test_weighted_melanoma_wins_when_close_to_the_likeliest_answer():
    """p(mel) 0.25 x 3 = 0.75 beats p(nv) 0.65: a melanoma missed is weighed as three false alarms."""
    decision = decide(np.array([0.0, 0.1, 0.25, 0.65]), None, WEIGHTED, LABELS)
    assert LABELS[decision.index] == "mel" and not decision.abstained


def test_weighted_melanoma_loses_to_a_clearly_likelier_answer():
    """The same p(mel) against p(nv) 0.8 (0.2 x 3 = 0.6 < 0.8): the threshold rule would still say melanoma."""
    probabilities = np.array([0.0, 0.0, 0.2, 0.8])
    assert LABELS[decide(probabilities, None, WEIGHTED, LABELS).index] == "nv"
    assert LABELS[decide(probabilities, None, SPEC, LABELS).index] == "mel"


def test_weights_compare_urgent_labels_with_each_other():
    decision = decide(np.array([0.0, 0.45, 0.2, 0.35]), None, WEIGHTED, LABELS)  # bcc 0.9 vs mel 0.6
    assert LABELS[decision.index] == "bcc" and not decision.abstained


def test_weighted_operating_point_still_abstains_on_an_unsure_benign_answer():
    decision = decide(np.array([0.45, 0.1, 0.05, 0.4]), None, WEIGHTED, LABELS)
    assert decision.abstained and decision.reason == LOW_CONFIDENCE and LABELS[decision.index] == "akiec"


def test_a_decision_has_one_operating_point_with_sane_weights():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="both priority and label_weights"):
        DecisionSpec(priority=(PriorityRule(label="mel", min_probability=0.2),), label_weights={"mel": 2.0})
    with pytest.raises(ValidationError, match="between 1 and 1000"):
        DecisionSpec(label_weights={"mel": 0.5})


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
    # tied scores are one threshold: the plotted area is the AUROC whatever the order of the tied rows
    y, score = np.array([1, 0, 0, 1, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5, 0.9, 0.1])
    for order in (np.arange(6), np.arange(6)[::-1]):
        fpr, tpr = roc_curve(y[order], score[order])
        assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(y, score)) and len(fpr) == 4


def test_balanced_accuracy_is_mean_recall_over_present_classes():
    y = np.array([0, 0, 0, 0, 1, 2])
    predicted = np.array([0, 0, 0, 0, 0, 2])
    assert balanced_accuracy(y, predicted, 4) == pytest.approx((1.0 + 0.0 + 1.0) / 3)


def test_manifest_refuses_a_temperature_without_logits(imagenet_pack, tmp_path):
    import json

    from edge.errors import ModelError
    from edge.inference.manifest import load_pack

    manifest = json.loads((imagenet_pack / "model.json").read_text())
    manifest["decision"]["temperature"] = 2.0
    broken = tmp_path / "temperature-on-softmax"
    broken.mkdir()
    (broken / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="temperature needs logits"):
        load_pack(broken)


def test_fitted_weights_are_the_smallest_reaching_each_sensitivity_target():
    """``fit_operating_point`` on a synthetic val set: melanoma reaches 85 % sensitivity with both weights in
    place and one step less on its weight misses it; BCC's reported sensitivity is what the weights give."""
    from edge.inference.decision import decide_batch
    from edge.training.export import WEIGHT_STEP, fit_operating_point

    rng = np.random.default_rng(3)
    y = rng.integers(0, len(LABELS), 600)
    logits = rng.normal(0, 1, (600, len(LABELS)))
    logits[np.arange(600), y] += 1.5  # an informative but weak model: the argmax misses many
    p = softmax(logits)
    weights, chosen = fit_operating_point(p, y, LABELS, 1.0, 1)

    def sensitivity(w, label):
        decided = np.array([d.index for d in decide_batch(p, None, DecisionSpec(label_weights=w), LABELS)])
        c = LABELS.index(label)
        return float(np.mean(decided[y == c] == c))

    assert set(weights) == {"mel", "bcc"} and all(w > 1.0 for w in weights.values())
    assert sensitivity(weights, "mel") >= 0.85
    assert sensitivity({**weights, "mel": max(1.0, weights["mel"] * np.exp(-WEIGHT_STEP) * 0.999)}, "mel") < 0.85
    for label in weights:
        assert chosen[label] == {"weight": weights[label], "val_sensitivity": sensitivity(weights, label)}


def test_vectorised_decisions_equal_the_device_rule():
    from edge.inference.decision import decide_batch, decide_indices

    rng = np.random.default_rng(5)
    p = softmax(rng.normal(0, 1.5, (2000, len(LABELS))))
    for spec in (SPEC, WEIGHTED, DecisionSpec()):
        assert decide_indices(p, spec, LABELS).tolist() == [d.index for d in decide_batch(p, None, spec, LABELS)]


def test_cross_fitted_score_does_not_flatter_a_model_that_knows_nothing():
    """Logits unrelated to the labels: an operating point fitted and scored on the same images can look better
    than chance; fitted on one half of the lesions and scored on the other it stays at chance (1/k)."""
    from edge.training.export import cross_fitted_score

    rng = np.random.default_rng(11)
    groups = np.repeat(np.arange(300), 2)  # two images per lesion
    y = np.repeat(rng.integers(0, len(LABELS), 300), 2)
    logits = rng.normal(0, 1, (600, len(LABELS)))
    first = cross_fitted_score(logits, y, groups, LABELS, 1, repeats=4)
    assert first == cross_fitted_score(logits, y, groups, LABELS, 1, repeats=4)  # seeded
    assert first["fits"] == 8 and abs(first["mean"] - 1 / len(LABELS)) < 0.05
    informative = logits.copy()
    informative[np.arange(600), y] += 2.0
    assert cross_fitted_score(informative, y, groups, LABELS, 1, repeats=4)["mean"] > 0.6
