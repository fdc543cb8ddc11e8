"""`[homeassistant]`: Home Assistant MQTT discovery (service/homeassistant.py). Off by default."""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import Section

__all__ = ["HomeAssistantSettings"]


class HomeAssistantSettings(Section):
    enabled: bool = Field(
        default=False,
        description="Home Assistant MQTT discovery: each stream appears as a device with an alarm and "
        "score/likelihood sensors",
    )
    discovery_prefix: str = Field(
        default="homeassistant",
        min_length=1,
        description="Home Assistant's discovery prefix; configs are re-announced when `<prefix>/status` says `online`",
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _plain(cls, v: str) -> str:
        if "+" in v or "#" in v or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"discovery_prefix {v!r} must be a plain topic prefix")
        return v
