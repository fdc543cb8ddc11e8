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
    # The batch window (service/batching.py Pace, Daemon.pace; docs/performance.md, round 7): a batch is
    # stepped at once while the worker is within its CPU share, else when its pace allows, when it holds
    # target_batch readings, or max_wait_ms after its first reading at the latest.
    max_wait_ms: float = Field(
        default=20.0, ge=0, description="the longest a reading waits for its batch (the latency bound), ms"
    )
    target_batch: int = Field(
        default=64, ge=1, description="a batch of this many readings is stepped at once, whatever the pace"
    )
    batch_cpu_percent: float = Field(
        default=8.0,
        gt=0,
        le=100,
        description="the worker's pace, % of one core: after a batch that cost it c s of CPU, the next is "
        "stepped no sooner than c / (this / 100) s later (within `max_wait_ms`). A reading after a pause is "
        "stepped at once; steady load in batches large enough to keep the worker near this share (a small "
        "batch's cost is mostly per call). Higher: lower latency, more CPU (docs/operations.md, the batch window)",
    )
    idle_timeout_s: float = Field(
        default=0.0,
        ge=0,
        description="evict streams with no reading for this long, seconds (0 = never); evicted streams are "
        "spilled (`engine.evicted`), not dropped, and the cutoff follows the monotonic clock",
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
        default=300.0,
        ge=0,
        description="seconds a `ts` may be ahead of the daemon's clock; further ahead it must be within this of "
        "its stream's newest reading, or be confirmed by 3 readings in a row, else it is rejected `ts_in_future` "
        '(docs/operations.md, "Field conditions")',
    )
