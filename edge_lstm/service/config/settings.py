"""The whole configuration: top-level keys and one field per section. Sources are in `load.py`."""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..errors import ENV_PREFIX
from .alarm import AlarmSettings
from .base import doc_default
from .checkpoint import CheckpointSettings
from .commands import CommandSettings
from .engine import EngineSettings
from .homeassistant import HomeAssistantSettings
from .log import LogSettings
from .metrics import MetricsSettings
from .mqtt import MqttSettings
from .scoring import ScoringSettings
from .spill import SpillSettings

__all__ = ["Settings", "TOML_DATA"]


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets $STATE_DIRECTORY (a colon-separated list when several are given).
    sd = os.environ.get("STATE_DIRECTORY")
    return Path(sd.split(":")[0]) if sd else Path("state")


# The TOML document being loaded: parsed by `load_settings` (so that its errors are ours to word).
TOML_DATA: ContextVar[dict[str, Any] | None] = ContextVar("edge_lstm_toml", default=None)


class _TomlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole document

    def __call__(self) -> dict[str, Any]:
        return dict(TOML_DATA.get() or {})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    model: Path | None = Field(
        default=None,
        description="ONNX step model (docs/model-format.md)",
        json_schema_extra=doc_default("packaged model"),
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="checkpoints, journal and spilled streams (a directory)",
        json_schema_extra=doc_default("$STATE_DIRECTORY, else ./state"),
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="the broker and topics")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="state table and batching")
    log: LogSettings = Field(default_factory=LogSettings, description="logging")
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings, description="durable state")
    spill: SpillSettings = Field(default_factory=SpillSettings, description="spilled streams")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings, description="per-stream scoring")
    alarm: AlarmSettings = Field(default_factory=AlarmSettings, description="alarm hysteresis")
    commands: CommandSettings = Field(default_factory=CommandSettings, description="commands over MQTT")
    homeassistant: HomeAssistantSettings = Field(
        default_factory=HomeAssistantSettings, description="Home Assistant discovery"
    )
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Prometheus /metrics")

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
