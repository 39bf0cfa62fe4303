"""Model packs, backends, fallback and the classify CLI, on the real ImageNet int8 MobileNetV2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import PRETRAINED, run_edge
from edge.config import InferenceSettings
from edge.errors import BackendFailed, BackendUnavailable, ModelError
from edge.inference import Classifier, load_pack
from edge.inference import base as registry
from edge.inference import tflite
from edge.inference.cpu import CpuBackend, CpuSettings
from edge.inference.manifest import InputSpec, write_pack
from edge.types import Quality
from edge.vision.decode import read_image_file
from edge.vision.preprocess import Preprocessor

GRACE_HOPPER = PRETRAINED / "grace_hopper.bmp"


@pytest.fixture(scope="module")
def grace_hopper():
    return read_image_file(GRACE_HOPPER)


def open_classifier(pack_dir, backend="auto", **settings):
    return Classifier.open(load_pack(pack_dir), backend, InferenceSettings(**settings))


def test_cpu_backend_classifies_real_images(imagenet_pack, grace_hopper):
    classifier = open_classifier(imagenet_pack, "cpu")
    result = classifier.classify(grace_hopper, Quality())
    assert result.label == "military uniform"
    assert result.backend == "cpu"
    assert abs(sum(result.probabilities.values()) - 1.0) < 1e-4
    assert result.confidence == max(result.probabilities.values())
    cat = classifier.classify(read_image_file(PRETRAINED / "cat.bmp"), Quality())
    assert "cat" in cat.label


def test_auto_probes_coral_and_jetson_then_uses_cpu_with_reasons(imagenet_pack):
    classifier = open_classifier(imagenet_pack, "auto")
    health = classifier.health()
    assert [p["backend"] for p in health["probes"]] == ["coral", "jetson", "cpu"]
    assert health["backend"] == "cpu"
    assert "Edge TPU variant" in health["fallback_reason"]
    assert "no usable ONNX Runtime provider" in health["fallback_reason"]


def test_probing_for_a_jetson_sends_and_keeps_no_onnx_runtime_telemetry(tmp_path, imagenet_pack):
    """ONNX Runtime's pip build queues usage telemetry (a device id, sessions, run counts) under
    ~/.cache/Microsoft and looks up Microsoft's collector as soon as it is imported, which `auto` does at every
    start. The daemon switches it off, even when the environment asks for it."""
    home = tmp_path / "home"
    home.mkdir()
    done = run_edge("classify", str(GRACE_HOPPER), "--model", str(imagenet_pack), "--backend", "auto",
                    "--state-dir", str(tmp_path / "state"), "--log-level", "INFO",
                    env={"HOME": str(home), "TMPDIR": str(home), "ORT_DISABLE_TELEMETRY": "0"})
    assert done.returncode == 0, done.stderr
    assert "backend jetson unavailable: no usable ONNX Runtime provider" in done.stderr  # it was imported
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []


@pytest.fixture(scope="module")
def pack_with_edgetpu_file(tmp_path_factory, imagenet_pack):
    """A pack that lists an Edge TPU file, so the coral backend gets as far as loading the delegate."""
    out = tmp_path_factory.mktemp("coral") / "pack"
    pack = load_pack(imagenet_pack)
    files = {"cpu": imagenet_pack / "model.tflite", "coral": imagenet_pack / "model.tflite"}
    write_pack(out, model_files=files, labels=list(pack.manifest.labels), name="imagenet", version="1",
               licence="Apache-2.0", input_spec=pack.manifest.input)
    return out


def test_coral_requested_without_libedgetpu_falls_back_to_cpu(pack_with_edgetpu_file, grace_hopper):
    classifier = open_classifier(pack_with_edgetpu_file, "coral")
    assert classifier.backend_name == "cpu"
    assert "libedgetpu.so.1" in classifier.fallback_reason
    assert classifier.classify(grace_hopper, Quality()).label == "military uniform"


def test_coral_backend_alone_raises_clear_unavailable(pack_with_edgetpu_file):
    with pytest.raises(BackendUnavailable, match=r"Edge TPU delegate libedgetpu.so.1 did not load \(libedgetpu.so.1: cannot open"):
        registry.backend_class("coral")(load_pack(pack_with_edgetpu_file), InferenceSettings().coral)


class FlakyTpu(CpuBackend):
    """Stands in for an Edge TPU that loads, then fails mid-run (a USB accelerator unplugged)."""

    name = "coral"
    variant = "cpu"
    invocations = 0

    def __init__(self, pack, settings):
        super().__init__(pack, CpuSettings(threads=1))

    def invoke(self, tensor):
        FlakyTpu.invocations += 1
        if FlakyTpu.invocations > 2:
            raise BackendFailed("USB transfer failed: device disconnected")
        return super().invoke(tensor)


def test_backend_failing_during_inference_falls_back_to_cpu(imagenet_pack, grace_hopper, monkeypatch, caplog):
    monkeypatch.setitem(registry._REGISTRY, "coral", FlakyTpu)
    classifier = open_classifier(imagenet_pack, "coral")
    assert classifier.backend_name == "coral" and classifier.fallback_reason is None
    labels = [classifier.classify(grace_hopper, Quality()).label for _ in range(4)]
    assert labels == ["military uniform"] * 4  # the caller never sees the failure
    assert classifier.backend_name == "cpu"
    assert "coral failed while running: USB transfer failed" in classifier.health()["fallback_reason"]
    assert "falling back to cpu" in caplog.text


def test_an_accelerator_variant_that_does_not_fit_the_manifest_falls_back_to_cpu(imagenet_pack, monkeypatch):
    """A Coral/Jetson model compiled for another input size than the manifest's: the CPU runs the pack (it
    used to be a ValueError out of Classifier.open, which stopped the daemon at start)."""
    from edge.inference.base import TensorSpec

    class OtherSizeTpu(CpuBackend):
        name = "coral"
        variant = "cpu"

        def __init__(self, pack, settings):
            super().__init__(pack, CpuSettings(threads=1))
            self.input_spec = TensorSpec((1, 144, 192, 3), self.input_spec.dtype, self.input_spec.scale,
                                         self.input_spec.zero_point)

    monkeypatch.setitem(registry._REGISTRY, "coral", OtherSizeTpu)
    classifier = open_classifier(imagenet_pack, "coral")
    try:
        assert classifier.backend_name == "cpu"
        assert "manifest input 224x224 does not match the model's 192x144" in classifier.fallback_reason
    finally:
        classifier.close()
    with pytest.raises(ModelError, match="does not match"):  # and with no other backend left, a clear ModelError
        monkeypatch.setitem(registry._REGISTRY, "cpu", OtherSizeTpu)
        open_classifier(imagenet_pack, "cpu")


def test_a_cpu_fallback_that_does_not_fit_keeps_the_accelerator(imagenet_pack, grace_hopper, monkeypatch):
    """The accelerator fails mid-run and the CPU model does not fit the manifest: the classifier must not be
    left half-switched (the CPU backend with the accelerator's preprocessing, the accelerator closed)."""
    from edge.inference.base import TensorSpec

    class OtherSizeCpu(CpuBackend):
        def __init__(self, pack, settings):
            super().__init__(pack, settings)
            self.input_spec = TensorSpec((1, 144, 192, 3), self.input_spec.dtype, self.input_spec.scale,
                                         self.input_spec.zero_point)

    FlakyTpu.invocations = 0
    monkeypatch.setitem(registry._REGISTRY, "coral", FlakyTpu)
    classifier = open_classifier(imagenet_pack, "coral")
    monkeypatch.setitem(registry._REGISTRY, "cpu", OtherSizeCpu)
    try:
        for _ in range(2):  # the first two invokes work on the "Coral"
            classifier.classify(grace_hopper, Quality())
        with pytest.raises(ModelError, match="cpu fallback cannot run"):
            classifier.classify(grace_hopper, Quality())
        assert classifier.backend_name == "coral" and "cannot run" in classifier.health()["fallback_reason"]
    finally:
        classifier.close()


def test_an_accelerator_failing_with_no_usable_cpu_model_says_so(tmp_path, imagenet_pack, grace_hopper, monkeypatch):
    """On an accelerator device the CPU file is only opened at fallback time: if it is damaged, the error says
    both things, health says so, and the accelerator is kept (to be tried again), not closed and reused."""
    pack = tmp_path / "pack"
    shutil.copytree(imagenet_pack, pack)
    monkeypatch.setitem(registry._REGISTRY, "coral", FlakyTpu)
    monkeypatch.setattr(FlakyTpu, "invocations", 0)
    classifier = open_classifier(pack, "coral")
    assert classifier.classify(grace_hopper, Quality()).label == "military uniform"
    with open(pack / "model.tflite", "ab") as handle:
        handle.write(b"\0")  # the SD card damages the file after start
    classifier.pack._verified.pop("cpu")  # a real Coral runs its _edgetpu file: the cpu one was never checked
    monkeypatch.setattr(FlakyTpu, "invocations", 2)  # the accelerator fails from now on
    for _ in range(2):
        with pytest.raises(ModelError, match="coral failed while running.*cpu fallback cannot load"):
            classifier.classify(grace_hopper, Quality())
    assert classifier.backend_name == "coral"
    assert "cpu fallback cannot load" in classifier.health()["fallback_reason"]
    classifier.close()
    closed = CpuBackend(load_pack(imagenet_pack), CpuSettings(threads=1))
    closed.close()
    with pytest.raises(BackendFailed, match="closed"):  # a closed model fails as a backend, not AttributeError
        closed.invoke(np.zeros((1, 224, 224, 3), np.uint8))


def test_jetson_backend_without_gpu_provider_reports_what_exists(imagenet_pack):
    with pytest.raises(BackendUnavailable, match=r"wanted \['TensorrtExecutionProvider'.*offers \["):
        registry.backend_class("jetson")(load_pack(imagenet_pack), InferenceSettings().jetson)


def test_tensorrt_gets_its_engine_cache_under_the_state_dir(tmp_path):
    """Without the cache every start rebuilds the TensorRT engine (minutes on a Jetson)."""
    from edge.config import load_settings
    from edge.inference.jetson import provider_options

    settings = load_settings(None, {"state_dir": str(tmp_path / "state")})
    jetson = settings.inference.jetson
    assert jetson.trt_cache_dir == str(tmp_path / "state" / "trt-cache")
    options = provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider"], jetson)
    assert options == [("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                      "trt_engine_cache_path": jetson.trt_cache_dir}),
                       "CUDAExecutionProvider"]
    assert (tmp_path / "state" / "trt-cache").is_dir()
    chosen = load_settings(None, {"state_dir": str(tmp_path), "inference": {"jetson": {"trt_cache_dir": "/x"}}})
    assert chosen.inference.jetson.trt_cache_dir == "/x"


def test_jetson_code_path_runs_a_real_onnx_model(colour_pack):
    """ONNX Runtime's CPU provider, named explicitly in config, stands in for the Jetson GPU providers."""
    classifier = Classifier.open(load_pack(colour_pack), "jetson",
                                 InferenceSettings(jetson={"providers": ["CPUExecutionProvider"]}))
    assert classifier.backend_name == "jetson"
    red = np.zeros((300, 300, 3), np.uint8)
    red[..., 0] = 220
    green = np.roll(red, 1, axis=2)
    assert classifier.classify(red, Quality()).label == "red"
    assert classifier.classify(green, Quality()).label == "green"


def test_jetson_backend_runs_its_first_inference_when_it_opens(tmp_path, imagenet_pack):
    """TensorRT builds its engine on the first run (minutes on a Jetson): that must happen at start-up, so
    a model that loads but cannot run is refused when the backend opens, not on a patient's capture."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(  # loads (the batch size is symbolic), fails when run: 224*224*3 values into 7
        [helper.make_node("Reshape", ["input", "shape"], ["probs"])], "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 224, 224, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 7])],
        initializer=[numpy_helper.from_array(np.array([1, 7]), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "broken.onnx")
    write_pack(tmp_path / "pack", model_files={"cpu": imagenet_pack / "model.tflite", "jetson": tmp_path / "broken.onnx"},
               labels=[str(i) for i in range(7)], name="broken", version="1", licence="test",
               input_spec=InputSpec(width=224, height=224))
    with pytest.raises(BackendUnavailable, match="first inference failed"):
        registry.backend_class("jetson")(load_pack(tmp_path / "pack"),
                                         InferenceSettings(jetson={"providers": ["CPUExecutionProvider"]}).jetson)


def test_sha256_mismatch_refuses_to_load(tmp_path, imagenet_pack):
    tampered = tmp_path / "pack"
    shutil.copytree(imagenet_pack, tampered)
    with open(tampered / "model.tflite", "r+b") as handle:
        handle.seek(5000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="sha256 .* refusing to load"):
        open_classifier(tampered, "cpu")
    result = run_edge("classify", "--model", str(tampered), str(GRACE_HOPPER))
    assert result.returncode == 1 and "refusing to load" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.pop("labels"), "labels: Field required"),
    (lambda m: m["files"].pop("cpu"), "files.cpu is required"),
    (lambda m: m.update(urgency={"not-a-label": "urgent"}), "urgency names labels the model does not have"),
    (lambda m: m["files"]["cpu"].update(sha256="xyz"), "files.cpu.sha256"),
])
def test_malformed_manifest_is_refused_with_the_reason(tmp_path, imagenet_pack, mutate, message):
    broken = tmp_path / "pack"
    shutil.copytree(imagenet_pack, broken)
    manifest = json.loads((broken / "model.json").read_text())
    mutate(manifest)
    (broken / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=message):
        load_pack(broken)


def test_label_count_must_match_model_outputs(tmp_path, imagenet_pack):
    pack = write_pack(tmp_path / "pack", model_files={"cpu": imagenet_pack / "model.tflite"}, labels=["a", "b"],
                      name="wrong", version="1", licence="test", input_spec=InputSpec(width=224, height=224))
    with pytest.raises(ModelError, match="1001 outputs but the manifest lists 2 labels"):
        Classifier.open(pack, "cpu", InferenceSettings())


def test_missing_pack_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="no model pack at"):
        load_pack(tmp_path / "absent")


def test_tflite_runtime_fallback_import_order(monkeypatch):
    monkeypatch.setattr(tflite, "RUNTIME_MODULES", ("tflite_runtime_not_here.interpreter", "ai_edge_litert.interpreter"))
    assert tflite.runtime_module().__name__ == "ai_edge_litert.interpreter"
    monkeypatch.setattr(tflite, "RUNTIME_MODULES", ("nope_a.interpreter", "nope_b.interpreter"))
    with pytest.raises(BackendUnavailable, match="no TFLite runtime: pip install ai-edge-litert"):
        tflite.runtime_module()


def test_quantisation_lookup_table_matches_the_formula(imagenet_pack):
    classifier = open_classifier(imagenet_pack, "cpu")
    spec = classifier.backend.input_spec
    image = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    tensor = Preprocessor(load_pack(imagenet_pack).manifest.input, spec)(image)
    expected = np.clip(np.round((image.astype(np.float64) - 127.5) / 127.5 / spec.scale + spec.zero_point), 0, 255)
    assert tensor.shape == (1, 224, 224, 3) and tensor.dtype == np.uint8
    np.testing.assert_array_equal(tensor[0], expected.astype(np.uint8))


@pytest.mark.parametrize("image", [np.zeros((50, 60), np.uint8), np.zeros((50, 60, 4), np.uint8),
                                   np.zeros((50, 60, 3), np.float32)])
def test_classify_refuses_an_image_that_is_not_rgb_uint8(imagenet_pack, image):
    """Grey, RGBA or float pixels are a caller's bug: a clear ValueError, not an OpenCV assertion deep inside."""
    classifier = open_classifier(imagenet_pack, "cpu")
    try:
        with pytest.raises(ValueError, match="expected an RGB uint8 image"):
            classifier.classify(image, Quality())
    finally:
        classifier.close()


def test_center_square_crop_keeps_the_middle():
    from edge.inference.base import TensorSpec

    pre = Preprocessor(InputSpec(width=8, height=8, mean=(0, 0, 0), std=(1, 1, 1)),
                       TensorSpec((1, 8, 8, 3), np.dtype(np.float32)))
    image = np.zeros((8, 16, 3), np.uint8)
    image[:, 4:12] = 200  # the central square
    assert np.all(pre(image) == 200)


@pytest.mark.parametrize(("frame", "box"), [
    ((480, 640), (0, 0, 480, 640)),  # a 4:3 frame: all of it
    ((720, 1280), (0, 160, 720, 1120)),  # 16:9: the central 4:3 (960 wide)
    ((400, 400), (50, 0, 350, 400)),  # a square: the central band, full width
    ((640, 480), (140, 0, 500, 480)),  # portrait: a landscape band across the middle
])
def test_center_crop_keeps_the_inputs_aspect_ratio(frame, box):
    from edge.vision.preprocess import crop_box

    spec = InputSpec(width=192, height=144, crop="center")
    assert crop_box(*frame, spec) == box
    top, left, bottom, right = crop_box(*frame, spec.model_copy(update={"crop_fraction": 0.5}))
    assert (bottom - top) * 2 == box[2] - box[0] and (right - left) * 2 == box[3] - box[1]
    assert (top + bottom, left + right) == (box[0] + box[2], box[1] + box[3])  # still centred


def test_center_crop_feeds_a_4_3_model_the_whole_4_3_frame():
    from edge.inference.base import TensorSpec

    pre = Preprocessor(InputSpec(width=16, height=12, crop="center", mean=(0, 0, 0), std=(1, 1, 1)),
                       TensorSpec((1, 12, 16, 3), np.dtype(np.float32)))
    image = np.zeros((12, 16, 3), np.uint8)
    image[:, :2] = 200  # the left edge, which a square crop would drop
    assert pre(image).shape == (1, 12, 16, 3)
    assert np.all(pre(image)[0, :, :2] == 200) and np.all(pre(image)[0, :, 2:] == 0)
    wide = np.zeros((12, 24, 3), np.uint8)  # 2:1: its central 4:3 (16 columns) only
    wide[:, 4:20] = 100
    assert np.all(pre(wide) == 100)


def test_classify_cli_json_grace_hopper(imagenet_pack):
    result = run_edge("classify", "--json", "--model", str(imagenet_pack), str(GRACE_HOPPER))
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    record = json.loads(line)
    assert record["image"] == str(GRACE_HOPPER)
    assert record["label"] == "military uniform"
    assert record["confidence"] == pytest.approx(record["probabilities"]["military uniform"])
    assert len(record["probabilities"]) == 1001
    assert set(record["quality"]) >= {"ok", "reasons"}
    assert record["latency_ms"] > 0
    assert record["model"]["name"] == "imagenet-mobilenetv2-int8" and len(record["model"]["sha256"]) == 64
    assert record["backend"] == "cpu"


def test_add_variant_signs_the_new_file(tmp_path, imagenet_pack):
    pack_dir = tmp_path / "pack"
    shutil.copytree(imagenet_pack, pack_dir)
    compiled = tmp_path / "model_edgetpu_from_compiler.tflite"
    compiled.write_bytes((imagenet_pack / "model.tflite").read_bytes())
    result = run_edge("model", "add-variant", str(pack_dir), "coral", str(compiled))
    assert result.returncode == 0, result.stderr
    pack = load_pack(pack_dir)
    assert pack.verified_path("coral").name == "model_edgetpu.tflite"
    verify = run_edge("model", "verify", str(pack_dir))
    assert verify.returncode == 0 and "[PASS] coral: model_edgetpu.tflite sha256 ok" in verify.stdout
