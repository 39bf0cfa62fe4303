"""After training: export, quantise, calibrate on val, evaluate once on test, and write the model pack.

* SavedModel first (the route from Keras 3 to the TFLite converter), then a **full-integer int8** TFLite
  (int8 weights, activations, input and output; representative data from the training split) for the CPU
  and, after ``edgetpu_compiler``, the Coral; and a float **ONNX** export for the Jetson backend.
* **Calibration on val only**: temperature scaling (NLL), the melanoma/BCC operating point, the abstention
  and out-of-distribution thresholds, all measured through the int8 model on the device's preprocessing.
* **Test once**: the lesion-grouped test split is not read here at all. Choosing between runs happens on val;
  ``edge evaluate --final-report`` then scores the chosen pack on test, once, and writes the result into it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge.evaluation.metrics import balanced_accuracy, fit_temperature
from edge.evaluation.run import collect_outputs, load_images, open_variant
from edge.inference.decision import decide_indices, logsumexp, softmax
from edge.inference.manifest import DecisionSpec, OutputSpec, view_counts, write_pack
from edge.training.data import Sample, write_split
from edge.training.train import TrainConfig, input_spec, load_image, model_inputs, setup_tensorflow
from edge.types import Urgency

log = logging.getLogger("edge.train")
LABEL_INFO = Path(__file__).with_name("ham10000_labels.json")
# Operating point targets on val (the test split must reach >= 0.80; val targets carry a margin).
PRIORITY_TARGETS = {"mel": 0.85, "bcc": 0.85}
ABSTAIN_BELOW = 0.5  # calibrated: the top answer is less likely than not
OOD_PERCENTILE = 0.5  # % of val images whose logsumexp falls below the OOD threshold
VIEWS_MIN_GAIN = 0.005  # more test-time views cost more invokes: used only if they gain >= half a point on val
WEIGHT_STEP = 0.05  # the operating point's weights are searched on a log scale, 5 % apart
MAX_WEIGHT = 1000.0  # as DecisionSpec allows
CROSSFIT_REPEATS = 25  # random halves of val's lesions for the cross-fitted score (see cross_fitted_score)


def export_savedmodel(model, work: Path) -> Path:
    path = work / "saved_model"
    shutil.rmtree(path, ignore_errors=True)
    model.export(str(path), verbose=False)
    return path


def quantize_int8(tf, saved_model: Path, representative: np.ndarray, out: Path) -> Path:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in representative)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    out.write_bytes(converter.convert())
    return out


def export_onnx(saved_model: Path, out: Path) -> Path:
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model), "--output", str(out),
               "--opset", "17"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"tf2onnx failed: {result.stderr[-2000:]}")
    return out


def representative_images(samples: list[Sample], config: TrainConfig) -> np.ndarray:
    rng = np.random.default_rng(config.seed)
    chosen = rng.choice(len(samples), size=min(config.representative_images, len(samples)), replace=False)
    return model_inputs([load_image(samples[i].path, config.load_short_side) for i in chosen], config)


def label_tables(labels: list[str]) -> tuple[dict, dict]:
    info = json.loads(LABEL_INFO.read_text()) if LABEL_INFO.exists() else {}
    display = {label: info[label]["display_name"] for label in labels if label in info}
    urgency = {label: Urgency(info[label]["urgency"]) for label in labels if label in info}
    return display, urgency


def fit_operating_point(p: np.ndarray, y: np.ndarray, labels: tuple[str, ...], temperature: float,
                        views: int) -> tuple[dict[str, float], dict]:
    """The smallest weight per urgent label (``PRIORITY_TARGETS``, melanoma first) that reaches its val
    sensitivity target.

    Raising BCC's weight can take a melanoma that sat between the two, so after one pass in order the labels
    are revisited in reverse, melanoma last: melanoma's target is always met on val; a later label's is met
    unless it conflicts with an earlier one, and its val sensitivity is reported either way.
    """
    targets = {label: target for label, target in PRIORITY_TARGETS.items() if label in labels}
    weights = {label: 1.0 for label in targets}
    order = list(targets)

    def measure(candidate: dict[str, float]) -> dict[str, float]:
        spec = DecisionSpec(temperature=temperature, test_time_views=views, label_weights=candidate)
        decided = decide_indices(p, spec, labels)
        return {label: float(np.mean(decided[y == labels.index(label)] == labels.index(label))) for label in targets}

    sensitivity = measure(weights)
    for label in order + order[-2::-1]:
        step = round(np.log(weights[label]) / WEIGHT_STEP)
        while sensitivity[label] < targets[label] and np.exp((step + 1) * WEIGHT_STEP) <= MAX_WEIGHT:
            step += 1
            weights = {**weights, label: round(float(np.exp(step * WEIGHT_STEP)), 4)}
            sensitivity = measure(weights)
    chosen = {label: {"weight": weights[label], "val_sensitivity": sensitivity[label]} for label in targets}
    return weights, chosen


def cross_fitted_score(logits: np.ndarray, y: np.ndarray, groups: np.ndarray, labels: tuple[str, ...], views: int,
                       repeats: int = CROSSFIT_REPEATS, seed: int = 0) -> dict:
    """Val balanced accuracy at the operating point, *cross-fitted*: temperature and weights fitted on a random
    half of val's lesions and scored on the other half, both ways, over ``repeats`` random halvings.

    Fitting an operating point and scoring it on the same images flatters it: on this val set a threshold rule
    scored 0.732 in-sample but 0.689 cross-fitted. The cross-fitted number estimates what a fitted decision
    scores on images it was not fitted on, so it is what packs and view counts are compared by. Halves are
    lesion-grouped like the split, so no lesion is on both sides.
    """
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    k, mel = len(labels), labels.index("mel") if "mel" in labels else None
    scores, mel_sensitivity = [], []
    for _ in range(repeats):
        half = np.isin(groups, rng.choice(unique, size=len(unique) // 2, replace=False))
        for fit, held in ((half, ~half), (~half, half)):
            temperature = fit_temperature(y[fit], logits[fit])
            weights, _ = fit_operating_point(softmax(logits[fit], temperature), y[fit], labels, temperature, views)
            spec = DecisionSpec(temperature=temperature, test_time_views=views, label_weights=weights)
            decided = decide_indices(softmax(logits[held], temperature), spec, labels)
            scores.append(balanced_accuracy(y[held], decided, k))
            if mel is not None and np.any(y[held] == mel):
                mel_sensitivity.append(float(np.mean(decided[y[held] == mel] == mel)))
    return {"mean": float(np.mean(scores)), "sd": float(np.std(scores)), "fits": len(scores),
            "mel_sensitivity_mean": float(np.mean(mel_sensitivity)) if mel_sensitivity else None}


def fit_decision(pack, val: list[Sample]) -> tuple[DecisionSpec, dict]:
    """Test-time views, temperature, operating point and abstention, fitted on val through the int8 model.

    Each count of views (1, 4, and 8 for a square input) gets its own temperature and operating point; the pack ships the fewest
    views within ``VIEWS_MIN_GAIN`` of the best *cross-fitted* val balanced accuracy at the operating point
    (``cross_fitted_score``): the number a user actually gets, estimated on images the decision was not
    fitted on (more views cost more invokes).
    """
    labels = pack.manifest.labels
    y = np.array([labels.index(s.label) for s in val])
    groups = np.array([s.group for s in val])
    classifier = open_variant(pack, "int8")
    options = view_counts(pack.manifest.input)
    outputs = collect_outputs(classifier, load_images([s.path for s in val]), views=max(options))
    classifier.close()
    k = len(labels)
    candidates = {}
    for views in options:
        logits = outputs.logits(views)
        temperature = fit_temperature(y, logits)
        p = softmax(logits, temperature)
        weights, chosen = fit_operating_point(p, y, labels, temperature, views)
        spec = DecisionSpec(temperature=temperature, test_time_views=views, label_weights=weights)
        crossfit = cross_fitted_score(logits, y, groups, labels, views)
        candidates[views] = {"temperature": temperature, "weights": weights, "operating_point": chosen,
                             "val_balanced_accuracy_argmax": balanced_accuracy(y, logits.argmax(1), k),
                             "val_balanced_accuracy_operating_point": balanced_accuracy(
                                 y, decide_indices(p, spec, labels), k),
                             "val_balanced_accuracy_operating_point_cross_fitted": crossfit}
        log.info("val, %d view(s): balanced accuracy %.4f at argmax, %.4f at the operating point "
                 "(cross-fitted %.4f ± %.4f)", views, candidates[views]["val_balanced_accuracy_argmax"],
                 candidates[views]["val_balanced_accuracy_operating_point"], crossfit["mean"], crossfit["sd"])
    best = max(c["val_balanced_accuracy_operating_point_cross_fitted"]["mean"] for c in candidates.values())
    views = min(v for v, c in candidates.items()
                if c["val_balanced_accuracy_operating_point_cross_fitted"]["mean"] >= best - VIEWS_MIN_GAIN)
    pick = candidates[views]
    ood = float(np.percentile(logsumexp(outputs.logits(views)), OOD_PERCENTILE))
    decision = DecisionSpec(temperature=pick["temperature"], test_time_views=views, label_weights=pick["weights"],
                            abstain_below=ABSTAIN_BELOW, ood_min_logsumexp=round(ood, 4))
    by_views = {str(v): {key: value for key, value in c.items() if key != "weights"} for v, c in candidates.items()}
    return decision, {"temperature": pick["temperature"], "test_time_views": views, "candidates": by_views,
                      "operating_point": pick["operating_point"], "abstain_below": ABSTAIN_BELOW,
                      "ood_min_logsumexp": ood, "ood_percentile_of_val": OOD_PERCENTILE, "n_val": len(val)}


def recalibrate_pack(pack_dir: Path, images_dir: Path, version: str) -> dict:
    """Re-fit a trained pack's decision (views, temperature, operating point, abstention) on its own val
    split, as ``edge train`` does at the end, and give it a new version; the model files are untouched.

    A held-out test report of the old decision no longer describes the pack, so it is moved aside
    (``evaluation_test.<old version>.json``) and the new one must be made with ``edge evaluate --final-report``.
    """
    from edge.inference.manifest import load_pack, update_manifest
    from edge.training.data import read_split

    pack = load_pack(pack_dir)
    if version == pack.manifest.version:
        raise ValueError(f"a re-fitted decision is a new pack: give a version other than {version}")
    val = read_split(pack.root / "split.csv", images_dir, "val")
    if not val:
        raise ValueError(f"{pack.root / 'split.csv'} has no val rows to fit on")
    log.info("fitting test-time views, temperature, operating point and abstention on val (%d images)", len(val))
    decision, calibration = fit_decision(pack, val)
    old_version = pack.manifest.version
    update_manifest(pack.root, decision=decision.model_dump(mode="json"), version=version)
    training_path = pack.root / "training.json"
    if training_path.exists():
        training = json.loads(training_path.read_text())
        training.setdefault("earlier_calibrations", []).append({"version": old_version, **training["calibration"]})
        training["calibration"] = calibration
        training_path.write_text(json.dumps(training, indent=2))
    move_test_report_aside(pack.root, old_version)
    return calibration


def finish_pack(model, config: TrainConfig, split: dict[str, list[Sample]], labels: list[str], work: Path, out: Path,
                *, name: str, version: str, licence: str, history: list) -> Path:
    keras, tf = setup_tensorflow(config.seed)
    saved_model = export_savedmodel(model, work)
    log.info("quantising to int8 with %d representative training images", config.representative_images)
    tflite = quantize_int8(tf, saved_model, representative_images(split["train"], config), work / "model.tflite")
    onnx = export_onnx(saved_model, work / "model.onnx")
    display, urgency = label_tables(labels)
    common = dict(model_files={"cpu": tflite, "jetson": onnx}, labels=labels, name=name, version=version,
                  licence=licence, display_names=display, urgency=urgency,
                  input_spec=input_spec(config),
                  output=OutputSpec(activation="none"),
                  description="MobileNetV2 fine-tuned on HAM10000 dermoscopy; a screening aid, not a diagnosis.")
    out = Path(out)
    # Built in a folder of its own and moved into place at the end: an interrupted run never leaves a pack
    # that verifies but has no fitted decision (no melanoma weighting, no abstention).
    staging = out.parent / f".{out.name}.building"
    if staging.exists():
        shutil.rmtree(staging)
    pack = write_pack(staging, **common)
    log.info("fitting temperature, operating point and abstention on val (%d images)", len(split["val"]))
    decision, calibration = fit_decision(pack, split["val"])
    pack = write_pack(staging, decision=decision, **common)
    write_split(split, staging / "split.csv")
    (staging / "training.json").write_text(json.dumps({"config": asdict(config), "history": history,
                                                       "calibration": calibration,
                                                       "split_sizes": {k: len(v) for k, v in split.items()}},
                                                      indent=2))
    from edge.training.report import write_training_curves

    write_training_curves(staging, history)
    install_built_pack(staging, out)
    log.info("model pack written to %s", out)
    return out


def move_test_report_aside(root: Path, old_version: str) -> None:
    """The pack's held-out test report describes the model or decision it had: once either changes, the report
    is kept as ``evaluation_test.<old version>.json`` and a new one must come from ``--final-report``."""
    from edge.evaluation.command import FINAL_REPORT

    report = root / FINAL_REPORT
    if report.exists():
        report.replace(root / f"evaluation_test.{old_version}.json")


def install_built_pack(staging: Path, out: Path) -> None:
    """Move a finished pack from ``staging`` to ``out``. A new folder is one rename. Into an existing pack
    (say the shipped one, with its model card and fact sheets, which training does not make), each file is
    replaced on its own and ``model.json`` last, so the folder never pairs a new decision with an old model;
    the old pack's test report, which no longer describes it, is moved aside as ``recalibrate_pack`` does."""
    if not out.exists():
        staging.rename(out)
        return
    old_manifest = out / "model.json"
    old_version = json.loads(old_manifest.read_text()).get("version", "previous") if old_manifest.exists() \
        else "previous"
    move_test_report_aside(out, old_version)
    for path in sorted(staging.iterdir(), key=lambda p: p.name == "model.json"):  # model.json last
        os.replace(path, out / path.name)
    staging.rmdir()
