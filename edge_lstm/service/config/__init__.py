"""Daemon configuration: a TOML file plus `EDGE_LSTM_*` environment variables (env wins).

    settings = load_settings("/etc/edge-lstm/config.toml")   # or $EDGE_LSTM_CONFIG, or no file

One module per section, each a pydantic model that refuses unknown keys and gives every setting a
`Field(description=...)` with its unit and bounds. The README's configuration table is generated from
those models (`./dev docs`, `reference.py`), and tests/unit/test_docs.py fails when it is stale.

To add a setting: add the `Field` to its section's module (with description, unit, bounds), run
`./dev docs`, and show the key in systemd/config.toml. To add a section: a module with a `Section`
subclass, one field in `settings.py`, and its name in `reference.SECTIONS` order (automatic).
"""

from __future__ import annotations

from ..errors import ENV_PREFIX
from .alarm import AlarmSettings
from .base import CONFIG_ENV, ConfigError, Section
from .checkpoint import CheckpointSettings
from .commands import CommandSettings
from .engine import EngineSettings
from .homeassistant import HomeAssistantSettings
from .load import describe_validation_error, load_settings, read_toml
from .log import LogSettings
from .metrics import MetricsSettings
from .mqtt import MqttSettings, TlsSettings, cleartext_password
from .scoring import ScoringSettings
from .settings import Settings
from .spill import SpillSettings

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "AlarmSettings",
    "CheckpointSettings",
    "CommandSettings",
    "ConfigError",
    "EngineSettings",
    "HomeAssistantSettings",
    "LogSettings",
    "MetricsSettings",
    "MqttSettings",
    "ScoringSettings",
    "Section",
    "Settings",
    "SpillSettings",
    "TlsSettings",
    "cleartext_password",
    "describe_validation_error",
    "load_settings",
    "read_toml",
]
