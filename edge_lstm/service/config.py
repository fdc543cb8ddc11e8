"""Daemon configuration: a TOML file plus `EDGE_LSTM_*` environment variables (env wins).

    settings = load_settings("/etc/edge-lstm/config.toml")   # or $EDGE_LSTM_CONFIG, or no file

Every section refuses unknown keys; `load_settings` raises `ConfigError` whose message names the key
(as a dotted TOML path and as the environment variable that sets it). docs/operations.md has the
reference table; keep it in sync with the fields below.
"""

from __future__ import annotations

import os
import socket
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..alarm import AlarmPolicy
from ..score import ScoringConfig
from .startup import StartupError

ENV_PREFIX = "EDGE_LSTM_"
CONFIG_ENV = "EDGE_LSTM_CONFIG"


class ConfigError(StartupError, ValueError):
    """Bad configuration. The message names the key; the CLI exits 2 (`StartupError.exit_code`)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TlsSettings(_Section):
    enabled: bool = False
    ca_file: Path | None = None  # None with enabled=true: the system CA store
    cert_file: Path | None = None  # client certificate (mutual TLS)
    key_file: Path | None = None
    insecure: bool = False  # skip hostname verification (testing only)

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


def _default_client_id() -> str:
    return f"edge-lstm-{socket.gethostname()}"[:64]


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str = Field(default_factory=_default_client_id, min_length=1, max_length=128)
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password: SecretStr | None = None
    # A file holding the password (e.g. a systemd credential). Default: $CREDENTIALS_DIRECTORY/mqtt_password
    # when that file exists and `password` is unset.
    password_file: Path | None = None
    tls: TlsSettings = Field(default_factory=TlsSettings)
    keepalive: int = Field(default=30, ge=5, le=65535)
    qos_in: Literal[0, 1] = 1
    qos_out: Literal[0, 1] = 1
    input_pattern: str = "sensors/{stream}"
    output_pattern: str = "edge-lstm/scores/{stream}"
    # Alarm state changes, retained (README, "MQTT topics and payloads"); "" = not published.
    alarm_pattern: str = "edge-lstm/alarms/{stream}"
    status_topic: str = Field(default="edge-lstm/status", min_length=1)
    errors_topic: str = ""  # "" = rejections are not published
    stats_topic: str = "edge-lstm/stats"  # retained stats JSON every log.stats_interval_s; "" = not published
    session_expiry_s: int = Field(default=86_400, ge=0, le=4_294_967_295)
    # MQTT v5 Receive Maximum: the broker never has more unacknowledged QoS 1 readings in flight to us
    # than this, which bounds the daemon's inbound queue (readings are acked only after their result).
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    # Results awaiting the broker's PUBACK beyond the inbox: the daemon stops taking readings at
    # engine.max_queue + max_inflight unacknowledged ones (paho's own window is off: docs/performance.md).
    max_inflight: int = Field(default=1000, ge=1, le=65535)
    reconnect_min_delay_s: float = Field(default=1.0, gt=0)
    reconnect_max_delay_s: float = Field(default=30.0, gt=0)

    @field_validator("protocol", mode="before")
    @classmethod
    def _proto_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("input_pattern", "output_pattern", "alarm_pattern")
    @classmethod
    def _pattern(cls, v: str, info: ValidationInfo) -> str:
        from ..topics import TopicPattern

        if v or info.field_name != "alarm_pattern":
            TopicPattern(v)  # raises ValueError with a clear message
        return v

    @field_validator("status_topic", "errors_topic", "stats_topic")
    @classmethod
    def _plain_topic(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError(f"topic {v!r} must not contain MQTT wildcards")
        return v

    @model_validator(mode="after")
    def _delays(self) -> MqttSettings:
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise ValueError("reconnect_max_delay_s must be >= reconnect_min_delay_s")
        return self

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        path, where = self.password_file, "mqtt.password_file"
        env = _env_name(("mqtt", "password_file"))
        if path is None:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            if creds and (Path(creds) / "mqtt_password").exists():
                path, where, env = Path(creds) / "mqtt_password", "credential mqtt_password", "CREDENTIALS_DIRECTORY"
        if path is None:
            return None
        try:
            return path.read_text().rstrip("\r\n")
        except IsADirectoryError:
            raise ConfigError(f"{where}: {path} is a directory, not a file [env {env}]") from None
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {path}: {e.strerror or e} [env {env}]") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: {path} is not UTF-8 text [env {env}]") from None


class EngineSettings(_Section):
    max_streams: int = Field(default=10_000, ge=1)
    max_batch: int = Field(default=1024, ge=1)
    # Received readings waiting for the worker; at this many the MQTT network thread stops reading
    # until half have been processed (backpressure to the broker instead of unbounded memory).
    max_queue: int = Field(default=10_000, ge=2)
    # The batch window (service/batching.py, docs/performance.md round 7): a batch is stepped at once
    # while the worker is within its CPU budget, else when its budget allows, when it holds
    # target_batch readings, or max_wait_ms after its first reading at the latest.
    max_wait_ms: float = Field(
        default=20.0, ge=0, description="ms: the longest a reading waits for its batch (the latency bound)"
    )
    target_batch: int = Field(
        default=64, ge=1, description="readings: a batch this large is stepped at once, whatever the budget"
    )
    batch_cpu_percent: float = Field(
        default=8.0,
        gt=0,
        le=100,
        description="% of one core: after a batch that cost the worker c s of CPU, the next is stepped no "
        "sooner than c / (this / 100) s later (within max_wait_ms): light load is stepped at once, steady "
        "load in batches large enough to keep the worker near this share",
    )
    idle_timeout_s: float = Field(default=0.0, ge=0)  # 0 = never evict idle streams (only LRU when full)
    threads: int = Field(default=1, ge=1, le=64)
    # What happens to a stream evicted from a full table: "spill" writes its state to
    # state_dir/spill.db and restores it when the stream returns; "drop" forgets it (it warms up again).
    evicted: Literal["spill", "drop"] = "spill"
    max_spilled: int = Field(default=100_000, ge=1)  # versions kept in spill.db; oldest dropped beyond
    max_payload_bytes: int = Field(default=4096, ge=16)
    max_future_s: float = Field(default=300.0, ge=0)


_SCORING, _ALARM = ScoringConfig(), AlarmPolicy()


class ScoringSettings(_Section):
    """Per-stream scoring (docs/scoring.md): the deviation channel's baseline period, smoothing and risk.
    Defaults are ScoringConfig's (one source: replay and evaluate use them too)."""

    baseline: int = Field(default=_SCORING.baseline, ge=3)  # readings a stream learns its normal operation from
    span: int = Field(default=_SCORING.span, ge=1)  # EWMA span of the deviation, readings
    risk: float = Field(default=_SCORING.risk, gt=0, lt=0.5)  # per-reading false-flag probability of the threshold
    inflate: float = Field(default=_SCORING.inflate, ge=1)  # EWMA variance vs i.i.d. (autocorrelated sensors)
    track: float = Field(default=_SCORING.track, ge=0)  # readings: how slowly the level follows the stream
    influence: float = Field(default=_SCORING.influence, ge=0)  # one reading's bound in e, × threshold (0: none)
    threshold: Literal["pot", "chi2"] = _SCORING.threshold_method  # per-stream tail fit, or the prior law
    tail_window: int = Field(default=_SCORING.tail_window, ge=0)  # readings after the baseline whose tail is fitted
    extrapolate: Literal["quantile", "risk", "off"] = _SCORING.extrapolate  # the forecast score's threshold
    max_gap_s: float = Field(default=_SCORING.max_gap_s, ge=0)  # a reading after a longer gap only re-anchors
    stuck_after: int = Field(default=_SCORING.stuck_after, ge=0)  # readings of one repeated value (0: off)
    known_states: bool = _SCORING.known_states  # also compare with the calibration's normal operating states

    def config(self) -> ScoringConfig:
        return ScoringConfig(
            baseline=self.baseline,
            span=self.span,
            risk=self.risk,
            inflate=self.inflate,
            track=self.track,
            influence=self.influence,
            threshold_method=self.threshold,
            tail_window=self.tail_window,
            extrapolate=self.extrapolate,
            max_gap_s=self.max_gap_s,
            stuck_after=self.stuck_after,
            known_states=self.known_states,
        )


class CommandSettings(_Section):
    """Commands over MQTT (service/commands.py): off by default; limit who may publish on the topic
    with the broker's ACL (docs/operations.md)."""

    enabled: bool = False
    topic: str = Field(default="edge-lstm/command", min_length=1)

    @field_validator("topic")
    @classmethod
    def _plain(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError(f"topic {v!r} must not contain MQTT wildcards")
        return v


class HomeAssistantSettings(_Section):
    """Home Assistant MQTT discovery (service/homeassistant.py): off by default."""

    enabled: bool = False
    discovery_prefix: str = Field(default="homeassistant", min_length=1)

    @field_validator("discovery_prefix")
    @classmethod
    def _plain(cls, v: str) -> str:
        if "+" in v or "#" in v or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"discovery_prefix {v!r} must be a plain topic prefix")
        return v


class MetricsSettings(_Section):
    """Prometheus /metrics (service/metrics.py; the `metrics` extra). Off unless a port is set."""

    port: int = Field(default=0, ge=0, le=65535)  # 0 = off
    address: str = "127.0.0.1"  # where to listen; "0.0.0.0" for a Prometheus on another host


class AlarmSettings(_Section):
    """Alarm hysteresis per stream (alarm.py): raise after `raise_n` of the last `raise_window` readings
    are flagged, clear after `clear_after` consecutive quiet readings (unflagged, likelihood at most
    `clear_likelihood`)."""

    raise_n: int = Field(default=_ALARM.raise_n, ge=1)
    raise_window: int = Field(default=_ALARM.raise_window, ge=1, le=62)
    clear_after: int = Field(default=_ALARM.clear_after, ge=1)
    clear_likelihood: float = Field(default=_ALARM.clear_likelihood, gt=0, le=1)

    @model_validator(mode="after")
    def _n_in_window(self) -> AlarmSettings:
        if self.raise_n > self.raise_window:
            raise ValueError(f"raise_n ({self.raise_n}) must be <= raise_window ({self.raise_window})")
        return self

    def policy(self) -> AlarmPolicy:
        return AlarmPolicy(self.raise_n, self.raise_window, self.clear_after, self.clear_likelihood)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    stats_interval_s: float = Field(default=60.0, ge=0)  # 0 = no periodic stats line
    rejections_burst: int = Field(default=10, ge=0)  # rejections logged in full per reason per interval
    rejections_interval_s: float = Field(default=60.0, gt=0)

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class CheckpointSettings(_Section):
    enabled: bool = True
    interval_s: float = Field(default=60.0, gt=0)
    # The journal is written to the OS before each acknowledgement (a crash of the process loses
    # nothing); it is fsynced this often, which bounds what a power cut can lose (SD-card wear).
    fsync_interval_s: float = Field(default=5.0, ge=0)


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets $STATE_DIRECTORY (a colon-separated list when several are given).
    sd = os.environ.get("STATE_DIRECTORY")
    return Path(sd.split(":")[0]) if sd else Path("state")


_TOML_DATA: ContextVar[dict[str, Any] | None] = ContextVar("edge_lstm_toml", default=None)


class _TomlSource(PydanticBaseSettingsSource):
    """The already-parsed TOML document (parsed in `load_settings` so errors are ours to word)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole document

    def __call__(self) -> dict[str, Any]:
        return dict(_TOML_DATA.get() or {})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    model: Path | None = None  # None: the model shipped in the package
    state_dir: Path = Field(default_factory=_default_state_dir)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    alarm: AlarmSettings = Field(default_factory=AlarmSettings)
    commands: CommandSettings = Field(default_factory=CommandSettings)
    homeassistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: explicit arguments (in-process use), environment, then the TOML file.
        return (init_settings, env_settings, _TomlSource(settings_cls))


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p) for p in loc).upper()


def describe_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not isinstance(p, int)) or ("(settings)",)
        key = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        inp = err.get("input")
        shown = "" if err["type"] == "extra_forbidden" or isinstance(inp, dict) else f" (got {inp!r})"
        if "password" in key:
            shown = ""
        lines.append(f"{key}: {msg}{shown} [env {_env_name(loc)}]")
    return "; ".join(lines)


def _check_env(environ: dict[str, str] | os._Environ[str]) -> None:
    """Refuse `EDGE_LSTM_*` variables that name no setting (pydantic-settings ignores them silently)."""
    top = set(Settings.model_fields)
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_ENV:
            continue
        first = name[len(ENV_PREFIX) :].split("__")[0].lower()
        if first not in top:
            raise ConfigError(f"environment variable {name}: unknown key '{first}' (known: {', '.join(sorted(top))})")


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"config file {p}: cannot read: {e.strerror or e}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p}: invalid TOML: {e}") from None


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from `config` (or $EDGE_LSTM_CONFIG), the environment and `overrides`."""
    path = config if config is not None else (os.environ.get(CONFIG_ENV) or None)
    doc = read_toml(path) if path else {}
    _check_env(os.environ)
    token = _TOML_DATA.set(doc)
    try:
        return Settings(**overrides)
    except ValidationError as e:
        where = f" (config file {path})" if path else ""
        raise ConfigError(f"invalid configuration{where}: {describe_validation_error(e)}") from None
    finally:
        _TOML_DATA.reset(token)


def cleartext_password(m: MqttSettings) -> bool:
    """A password would cross the network unencrypted: no TLS and a broker that is not this host."""
    if m.tls.enabled or (m.password is None and m.password_file is None):
        return False
    host = m.host.strip("[]").lower()
    if host in ("localhost", "::1") or host.startswith("127."):
        return False
    return True
