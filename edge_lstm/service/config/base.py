"""What every configuration section shares: unknown keys refused, defaults validated, and the error type."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ..errors import StartupError

CONFIG_ENV = "EDGE_LSTM_CONFIG"


class ConfigError(StartupError, ValueError):
    """Bad configuration. The message names the key; the CLI exits 2 (`StartupError.exit_code`)."""


class Section(BaseModel):
    """One `[section]` of the TOML file (and its `EDGE_LSTM_<SECTION>__*` variables).

    Every field is a `Field(description=...)` with its unit and bounds: the README's configuration
    table is generated from them (`./dev docs`). A default that is computed at start (a host name, a
    systemd directory) says what it is with `json_schema_extra={"doc_default": "..."}`.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)


def plain_topic(v: str) -> str:
    """A topic the daemon publishes or subscribes to literally: no MQTT wildcards."""
    if "+" in v or "#" in v:
        raise ValueError(f"topic {v!r} must not contain MQTT wildcards")
    return v


def doc_default(text: str) -> dict[str, Any]:
    """`json_schema_extra` for a default the reference table shows as `text` (computed at start)."""
    return {"doc_default": text}
