"""`[spill]`: the store of evicted streams' states (`engine.evicted = "spill"`: state_dir/spill.db)."""

from __future__ import annotations

from pydantic import Field

from .base import Section

__all__ = ["SpillSettings"]


class SpillSettings(Section):
    max_bytes: int = Field(
        default=1 << 30,
        ge=1 << 20,
        description="bytes `spill.db` may use (1 GiB: ~200,000 streams, 6 % of a 16 GB SD card); beyond it the "
        "least recently seen spilled streams are dropped whole (counted: `spill_dropped_streams`)",
    )
