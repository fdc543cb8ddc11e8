"""`[checkpoint]`: durable stream state (docs/durability.md)."""

from __future__ import annotations

from pydantic import Field

from .base import Section

__all__ = ["CheckpointSettings"]


class CheckpointSettings(Section):
    enabled: bool = Field(default=True, description="durable state (docs/durability.md)")
    interval_s: float = Field(default=60.0, gt=0, description="between checkpoints, seconds")
    # The journal reaches the OS before each acknowledgement; fsync is what SD-card wear is traded for.
    fsync_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="how often the journal is fsynced (on a timer), seconds: what a power cut can lose (a "
        "process crash loses nothing)",
    )
