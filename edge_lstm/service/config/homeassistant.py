"""`[homeassistant]`: Home Assistant MQTT discovery (service/homeassistant.py, ha_bridge.py,
ha_states.py; docs/homeassistant.md). Off by default."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .base import Section

__all__ = ["HomeAssistantSettings"]


class HomeAssistantSettings(Section):
    enabled: bool = Field(
        default=False,
        description="Home Assistant MQTT discovery: each stream appears as a device with alarm, score, likelihood "
        "and deviation entities, the daemon as a device with its counters (docs/homeassistant.md)",
    )
    discovery_prefix: str = Field(
        default="homeassistant",
        min_length=1,
        description="Home Assistant's discovery prefix; configs are re-announced when `<prefix>/status` says `online`",
    )
    node_id: str = Field(
        default="edge_lstm",
        pattern=r"^[a-zA-Z0-9_-]{1,64}$",
        description="this daemon's id in unique ids, device ids and config topics (letters, digits, `_`, `-`; no "
        "host name, so ids survive a rename); give each daemon on one broker its own",
    )
    state_pattern: str = Field(
        default="edge-lstm/ha/{stream}",
        description="topic of each stream's Home Assistant state (retained JSON, at most one per `state_interval_s`)",
    )
    state_interval_s: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description="seconds: at most one Home Assistant state per stream per interval (the latest follows when it "
        "has passed; alarm changes at once; the result topic keeps every reading); 0 = every reading",
    )
    expire_after_s: int = Field(
        default=0,
        ge=0,
        le=86400,
        description="seconds without a state before Home Assistant shows a stream's entities unavailable; 0 = "
        "never; otherwise more than `state_interval_s`",
    )
    remove_on_evict: bool = Field(
        default=False,
        description="remove a stream's Home Assistant device when the stream is evicted as idle "
        "(`engine.idle_timeout_s`)",
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _plain(cls, v: str) -> str:
        if "+" in v or "#" in v or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"discovery_prefix {v!r} must be a plain topic prefix")
        return v

    @field_validator("state_pattern")
    @classmethod
    def _one_stream(cls, v: str) -> str:
        from ...topics import TopicPattern

        TopicPattern(v)  # raises ValueError with a clear message
        return v

    @model_validator(mode="after")
    def _expiry_after_interval(self) -> HomeAssistantSettings:
        if self.expire_after_s and self.expire_after_s <= self.state_interval_s:
            raise ValueError(
                f"expire_after_s ({self.expire_after_s}) must exceed state_interval_s ({self.state_interval_s}): "
                "a healthy stream's entities would turn unavailable between two states"
            )
        return self
