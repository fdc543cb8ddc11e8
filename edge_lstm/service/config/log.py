"""`[log]`: level, format, the periodic stats line and how rejections are logged."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import Section

__all__ = ["LogSettings"]


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="lowest level logged")
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="`auto`: `json` off a terminal (journald), `console` on one"
    )
    stats_interval_s: float = Field(
        default=60.0, ge=0, description="periodic `stats` line and systemd STATUS, seconds (0 = off)"
    )
    rejections_burst: int = Field(
        default=10,
        ge=0,
        description="rejections logged (and published on `mqtt.errors_topic`) in full per reason per interval…",
    )
    rejections_interval_s: float = Field(
        default=60.0, gt=0, description="…seconds; the rest are counted in one `rejected_suppressed` line"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v
