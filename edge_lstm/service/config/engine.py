"""`[engine]`: the state table, batching, the worker's queue and what a reading may be."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section

__all__ = ["EngineSettings"]


class EngineSettings(Section):
    max_streams: int = Field(
        default=10_000, ge=1, description="state table size, streams; the least recently seen is evicted beyond it"
    )
    max_batch: int = Field(default=1024, ge=1, description="readings gathered per worker cycle")
    # Backpressure to the broker instead of unbounded memory.
    max_queue: int = Field(
        default=10_000,
        ge=2,
        description="received readings waiting for the worker; at this many, reading from the broker pauses "
        "until half are processed (up to 1.5× while the worker itself waits for PUBACKs)",
    )
    # service/batching.py; the measurements are docs/performance.md, round 5.
    max_wait_ms: float = Field(
        default=50.0, ge=0, description="a batch is stepped this long after its first reading at the latest, ms…"
    )
    target_batch: int = Field(
        default=64,
        ge=1,
        description="…or as soon as it holds this many readings. At low rates the wait buys fewer, larger model "
        "calls: a batch costs the worker ~1.5–2.5 ms whatever its size up to a few dozen readings, so 1,000 "
        "streams × 1 Hz took ~8 % of a core with 50 / 64 against 13–15 % with 20 / 32, and 10 streams × 10 Hz "
        "4 % against 9 %, for ~25 ms more latency at p50 and ~35 ms at p99 at those rates; at high rates "
        "batches fill at once (docs/performance.md, round 5). Lower both (e.g. 5 and 8) for latency at the "
        "cost of CPU",
    )
    idle_timeout_s: float = Field(
        default=0.0, ge=0, description="evict streams with no reading for this long, seconds (0 = never)"
    )
    threads: int = Field(default=1, ge=1, le=64, description="onnxruntime intra-op threads")
    evicted: Literal["spill", "drop"] = Field(
        default="spill",
        description="a stream evicted from the table: `spill` (state kept in `state_dir/spill.db`, restored "
        "when it returns) or `drop` (it warms up again)",
    )
    max_spilled: int = Field(
        default=100_000, ge=1, description="spilled stream states kept on disk; the oldest dropped beyond"
    )
    max_payload_bytes: int = Field(default=4096, ge=16, description="larger payloads are rejected `too_large`, bytes")
    max_future_s: float = Field(
        default=300.0, ge=0, description="a `ts` further ahead than this is rejected `ts_in_future`, seconds"
    )
