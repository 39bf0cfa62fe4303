"""Model packs: a folder with ``model.json`` describing the model files, labels, input and urgency.

A pack is the unit that is trained, shipped, verified and (later) updated over the air. Every file it
lists carries a sha256; a file whose digest does not match is refused, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.errors import ModelError
from edge.types import ModelInfo, Urgency

MANIFEST_NAME = "model.json"
MANIFEST_SCHEMA = 1
Variant = Literal["cpu", "coral", "jetson"]
TestTimeViews = Literal[1, 4, 8]  # the image alone; with its 3 flips; and the same 4 of its transpose
TEST_TIME_VIEW_COUNTS: tuple[int, ...] = get_args(TestTimeViews)
VARIANT_FILENAMES: dict[str, str] = {"cpu": "model.tflite", "coral": "model_edgetpu.tflite", "jetson": "model.onnx"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """How a camera frame becomes the model's input tensor."""

    width: int = Field(ge=8, le=2048)
    height: int = Field(ge=8, le=2048)
    crop: Literal["center_square", "center", "none"] = Field(
        "center_square",
        description="center_square: crop the central square before resizing; center: the largest central "
                    "rectangle with the input's own aspect ratio (a 4:3 model sees all of a 4:3 frame); none: stretch.",
    )
    crop_fraction: float = Field(1.0, gt=0.1, le=1.0, description="Size of the crop relative to the largest one.")
    color_constancy: Literal["none", "shades_of_gray"] = Field(
        "none", description="shades_of_gray: neutralise the light's colour in the crop (edge.vision.color)."
    )
    color_constancy_power: float = Field(6.0, ge=1.0, le=16.0, description="Minkowski norm of Shades of Gray.")
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)


def view_counts(spec: InputSpec) -> tuple[int, ...]:
    """The test-time view counts an input allows: 8 views include the transpose, which only a square keeps."""
    return TEST_TIME_VIEW_COUNTS if spec.width == spec.height else tuple(v for v in TEST_TIME_VIEW_COUNTS if v != 8)


class OutputSpec(_Strict):
    activation: Literal["softmax", "none"] = Field(
        "softmax", description="softmax: the model outputs probabilities; none: logits, softmax applied here."
    )


class PriorityRule(_Strict):
    """Report ``label`` whenever its calibrated probability reaches ``min_probability``, even if another
    label is more likely: the operating point that trades specificity for melanoma/BCC sensitivity."""

    label: str
    min_probability: float = Field(gt=0.0, le=1.0)


class DecisionSpec(_Strict):
    """How calibrated probabilities become an answer, fitted on the validation split."""

    temperature: float = Field(1.0, gt=0.0, le=100.0, description="Logits are divided by this before softmax.")
    test_time_views: TestTimeViews = Field(1, description="Views whose logits are averaged: 1 the image "
                                              "alone, 4 with its flips, 8 also transposed (all 8 rotations and "
                                              "reflections of the square); chosen on val.")
    priority: tuple[PriorityRule, ...] = Field((), description="Checked in order before the argmax (packs up "
                                               "to 1.2.0; newer packs use label_weights).")
    label_weights: dict[str, float] = Field(default_factory=dict, description="The answer is the label with the "
                                            "largest weight x calibrated probability (unlisted labels weigh 1): "
                                            "missing a melanoma is weighed as that many false alarms.")
    abstain_below: float = Field(0.0, ge=0.0, le=1.0, description="Top calibrated probability below which "
                                 "the answer is 'unsure - please see a clinician'.")
    ood_min_logsumexp: float | None = Field(None, description="logsumexp of the logits below which the input "
                                            "is unlike anything seen in training (out of distribution).")

    @model_validator(mode="after")
    def _one_operating_point(self) -> "DecisionSpec":
        if self.priority and self.label_weights:
            raise ValueError("decision has both priority and label_weights: give one operating point")
        bad = {label: w for label, w in self.label_weights.items() if not 1.0 <= w <= 1000.0}
        if bad:
            raise ValueError(f"decision.label_weights must be between 1 and 1000: {bad}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _legacy_flips(cls, data):
        """Packs up to 1.1.0 said ``test_time_flips: true`` for the 4 flip views."""
        if isinstance(data, dict) and "test_time_flips" in data:
            data = dict(data)
            flips = data.pop("test_time_flips")
            if not isinstance(flips, bool):
                raise ValueError("test_time_flips must be true or false")
            data.setdefault("test_time_views", 4 if flips else 1)
        return data


class ModelFile(_Strict):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(_Strict):
    schema_version: int = Field(MANIFEST_SCHEMA, alias="schema")
    name: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=50)
    licence: str = Field(min_length=1)
    description: str = ""
    labels: tuple[str, ...] = Field(min_length=2)
    display_names: dict[str, str] = Field(default_factory=dict)
    urgency: dict[str, Urgency] = Field(default_factory=dict)
    default_urgency: Urgency = Urgency.ROUTINE
    input: InputSpec
    output: OutputSpec = Field(default_factory=OutputSpec)
    decision: DecisionSpec = Field(default_factory=DecisionSpec)
    files: dict[Variant, ModelFile]

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if self.schema_version != MANIFEST_SCHEMA:
            raise ValueError(f"manifest schema {self.schema_version} is not supported (expected {MANIFEST_SCHEMA})")
        if "cpu" not in self.files:
            raise ValueError("files.cpu is required: the CPU model is every device's fallback")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        for table in ("display_names", "urgency"):
            stray = set(getattr(self, table)) - set(self.labels)
            if stray:
                raise ValueError(f"{table} names labels the model does not have: {sorted(stray)}")
        stray = {rule.label for rule in self.decision.priority} - set(self.labels)
        if stray:
            raise ValueError(f"decision.priority names labels the model does not have: {sorted(stray)}")
        stray = set(self.decision.label_weights) - set(self.labels)
        if stray:
            raise ValueError(f"decision.label_weights names labels the model does not have: {sorted(stray)}")
        if self.decision.test_time_views not in view_counts(self.input):
            raise ValueError("decision.test_time_views 8 transposes the input: it needs a square input")
        if self.decision.temperature != 1.0 and self.output.activation != "none":
            raise ValueError("decision.temperature needs logits: set output.activation to 'none'")
        return self


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelPack:
    """A loaded manifest plus the folder it came from. Files are verified when first used."""

    root: Path
    manifest: Manifest
    _verified: dict[str, Path] = field(default_factory=dict, repr=False)

    def has_variant(self, variant: str) -> bool:
        return variant in self.manifest.files

    def verified_path(self, variant: str) -> Path:
        """The file for ``variant`` after checking its sha256; ``ModelError`` if missing or altered."""
        if variant in self._verified:
            return self._verified[variant]
        entry = self.manifest.files.get(variant)  # type: ignore[call-overload]
        if entry is None:
            raise ModelError(f"model pack {self.root} has no '{variant}' model file")
        path = self.root / entry.path
        if not path.is_file():
            raise ModelError(f"model pack {self.root}: {entry.path} is missing")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ModelError(
                f"model pack {self.root}: {entry.path} sha256 is {actual[:12]}…, manifest says "
                f"{entry.sha256[:12]}… — refusing to load a file that is corrupt or was altered"
            )
        self._verified[variant] = path
        return path

    def info(self, variant: str = "cpu") -> ModelInfo:
        return ModelInfo(self.manifest.name, self.manifest.version, self.manifest.files[variant].sha256)

    def urgency_of(self, label: str) -> Urgency:
        return self.manifest.urgency.get(label, self.manifest.default_urgency)

    def display_name(self, label: str) -> str:
        return self.manifest.display_names.get(label, label)

    def verify_all(self) -> list[tuple[str, bool, str]]:
        """(variant, ok, detail) for every listed file: what ``edge doctor`` prints."""
        report = []
        for variant, entry in self.manifest.files.items():
            try:
                self.verified_path(variant)
                report.append((variant, True, f"{entry.path} sha256 ok"))
            except ModelError as exc:
                report.append((variant, False, str(exc)))
        return report


def load_pack(root: Path) -> ModelPack:
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelError(f"no model pack at {root}: {MANIFEST_NAME} not found")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest = Manifest.model_validate(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{manifest_path}: not valid JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelError(f"{manifest_path}: {problems}") from None
    return ModelPack(root=root, manifest=manifest)


def write_pack(
    out_dir: Path,
    *,
    model_files: dict[str, Path],
    labels: list[str],
    name: str,
    version: str,
    licence: str,
    input_spec: InputSpec,
    output: OutputSpec | None = None,
    decision: DecisionSpec | None = None,
    urgency: dict[str, Urgency] | None = None,
    display_names: dict[str, str] | None = None,
    description: str = "",
) -> ModelPack:
    """Copy model files into ``out_dir`` under their standard names and write a checked manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for variant, source in model_files.items():
        target = out_dir / VARIANT_FILENAMES[variant]
        if Path(source).resolve() != target.resolve():
            shutil.copyfile(source, target)
        files[variant] = {"path": target.name, "sha256": sha256_file(target)}
    manifest = Manifest.model_validate(
        {
            "schema": MANIFEST_SCHEMA,
            "name": name,
            "version": version,
            "licence": licence,
            "description": description,
            "labels": labels,
            "display_names": display_names or {},
            "urgency": urgency or {},
            "input": input_spec.model_dump(),
            "output": (output or OutputSpec()).model_dump(),
            "decision": (decision or DecisionSpec()).model_dump(),
            "files": files,
        }
    )
    _write_manifest(out_dir, manifest)
    return load_pack(out_dir)


def _write_manifest(pack_dir: Path, manifest: Manifest) -> None:
    """Write ``model.json`` through a staged file, so a reader sees the old manifest or the new, never half."""
    staged = pack_dir / (MANIFEST_NAME + ".new")
    staged.write_text(json.dumps(manifest.model_dump(mode="json", by_alias=True), indent=2) + "\n", encoding="utf-8")
    staged.replace(pack_dir / MANIFEST_NAME)


def update_manifest(pack_dir: Path, **fields) -> ModelPack:
    """Replace top-level manifest fields (e.g. ``decision``, ``version``); the result is checked before the
    old manifest is replaced, so a pack that loaded keeps loading."""
    pack_dir = Path(pack_dir)
    raw = load_pack(pack_dir).manifest.model_dump(mode="json", by_alias=True)
    raw.update(fields)
    _write_manifest(pack_dir, Manifest.model_validate(raw))
    return load_pack(pack_dir)


def add_variant(pack_dir: Path, variant: str, source: Path) -> ModelPack:
    """Copy ``source`` into the pack as ``variant`` (e.g. the edgetpu_compiler output) and re-sign the manifest."""
    pack = load_pack(pack_dir)
    check_model_file(variant, Path(source))
    target = Path(pack_dir) / VARIANT_FILENAMES[variant]
    if Path(source).resolve() != target.resolve():
        try:
            shutil.copyfile(source, target)
        except OSError as exc:
            raise ModelError(f"cannot copy {source} into the pack: {exc.strerror or exc}") from None
    files = pack.manifest.model_dump(mode="json")["files"]
    files[variant] = {"path": target.name, "sha256": sha256_file(target)}
    return update_manifest(pack_dir, files=files)


def check_model_file(variant: str, path: Path) -> None:
    """``ModelError`` unless ``path`` is a regular file of the kind ``variant`` runs: a TFLite flatbuffer
    (its identifier "TFL3" at bytes 4-8) for cpu and coral, an ONNX model for jetson."""
    if not path.is_file():
        raise ModelError(f"no such model file: {path}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    if variant in ("cpu", "coral"):
        if head[4:8] != b"TFL3":
            raise ModelError(f"{path} is not a TFLite model (the {variant} variant needs one)")
        return
    try:
        import onnx  # noqa: PLC0415 - only for checking an ONNX variant; absent on most devices
    except ImportError:
        return
    try:
        onnx.checker.check_model(onnx.load(str(path), load_external_data=False))
    except Exception as exc:  # noqa: BLE001 - onnx raises its own (protobuf, checker) errors
        raise ModelError(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0][:200]}") from None


def read_labels(path: Path) -> list[str]:
    """One label per line; repeated names (ImageNet has two 'crane's) get a ' (2)' suffix, as keys must be unique."""
    seen: dict[str, int] = {}
    labels = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        name = line.strip()
        if not name:
            continue
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return labels
