"""The ports the core owns: what it needs from the model, the spill store, the broker link, the clock
and the disk.

Adapters implement them at the edges (`onnx_model.OnnxStepModel`, `durable.spill.SqliteSpill`,
`service.mqtt.MqttLink`, `durable.store.DurableState`), so the core imports neither onnxruntime, sqlite3
nor paho, and tests substitute doubles (`tests/support/fakes.py`).
"""

from __future__ import annotations

import queue
import time as _time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from .contract import ModelMeta
from .reading import Reading
from .state import StreamState


class StepModel(Protocol):
    """One timestep for a batch of streams: scaled inputs and states in, outputs and states out."""

    meta: ModelMeta
    state_shapes: list[tuple[int, ...]]
    sha256: str  # of the model file: checkpoints and spilled rows are bound to it ("": none, state not kept)

    def step(self, x: np.ndarray, states: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]: ...


class SpillStore(Protocol):
    """Where evicted streams' rows go, and come back from when the stream returns."""

    rows: int  # stored now (every version of every stream), for the stats
    dropped_streams: int  # streams dropped whole to stay within the store's size bound
    lost: int  # rows a failed write (a full disk) could not store

    def put(self, rows: Sequence[StreamState]) -> None: ...

    def get(self, stream: str, before_ts: float) -> StreamState | None: ...

    def forget(self, stream: str) -> bool:
        """Drop every stored version of a stream; True if there was one."""
        ...

    def rebind(self, model_sha256: str) -> None:
        """The rows stay valid for a reloaded model of the same state signature."""
        ...

    def compact(self) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Inbound:
    """One received MQTT message, as the link hands it from its network thread to the worker."""

    topic: bytes  # raw: decoding (and rejecting invalid UTF-8) is the worker's job
    payload: bytes
    mid: int
    qos: int
    arrival: float  # epoch seconds
    generation: int  # connection number it arrived on (acks of older connections are not sent)
    # MQTT v5 request/response, kept only for messages on the daemon's own topics (commands).
    response_topic: str | None = None
    correlation: bytes | None = None


# Put in the inbox (at most one outstanding) to wake the worker when a publish completes or the
# connection changes, so acknowledgements are not delayed until the next reading arrives.
WAKE: Final = object()

Inbox = queue.SimpleQueue  # of Inbound | WAKE; C-implemented, never blocks the network thread


class Bell(Protocol):
    """Rung by the link's network thread as messages arrive (`service.batching.Doorbell`), so that the
    worker sleeps out a batch window in one wait instead of polling the inbox."""

    def wait(self, inbox: Inbox[Any], needed: int, timeout: float) -> bool:
        """Worker: sleep until `needed` messages wait in `inbox` (True), or `timeout` seconds (False)."""
        ...

    def hold(self, seconds: float) -> None:
        """Worker, having just taken a batch: the next is not stepped sooner than `seconds` from now, so
        the network thread may leave small reads in the socket until shortly before then (0: the batch
        filled to its target; read on at once)."""
        ...


class Link(Protocol):
    """What the daemon needs from its broker connection (`service.mqtt.MqttLink` over paho).

    Thread contract: the link's own thread only appends to the inbox; everything here is called from
    the worker thread.
    """

    connected: bool
    subscribed: bool
    generation: int  # connection number: acks are only sent for messages of the current one
    session_present: bool  # the broker kept this client's session on the last connect (CONNACK flag)
    connects: int
    holds: int  # times reading from the broker paused because the worker was behind
    held_s: float
    max_inbox: int
    publish_failures: int
    intake_paused: bool  # the worker waits for PUBACKs: the link must keep reading (no backpressure hold)
    read_on: bool  # ... at its hard cap: read on even past the hold's bound (the PUBACKs are behind readings)

    @property
    def doorbell(self) -> Bell | None:
        """None: the worker polls the inbox in slices while a batch fills."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Publishes and acks made inside go out together (one wake-up of the network thread)."""
        ...

    def start(self) -> None: ...

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool = False, correlation: bytes | None = None
    ) -> Any:
        """Queue a message (`correlation`: MQTT v5 correlation data of a reply); returns a handle for
        `handed_over`."""
        ...

    def handed_over(self, handle: Any) -> bool:
        """True once the broker has the message (PUBACK for QoS 1, written for QoS 0)."""
        ...

    def ack(self, mid: int, qos: int) -> None: ...

    def woken(self) -> None:
        """The worker took a WAKE from the inbox."""
        ...

    def kick(self, min_age_s: float = 5.0) -> int: ...

    def stop_accepting(self) -> None: ...

    def close(self, timeout: float = 5.0) -> bool: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)


class Disk(Protocol):
    """Every write of the durable state (`durable.disk.OsDisk`): files by descriptor, so that a test can
    fail any write or fsync with `ENOSPC` as a full SD card does."""

    def create(self, path: Path) -> int: ...

    def open_append(self, path: Path) -> int: ...

    def write(self, fd: int, data: bytes | memoryview) -> None: ...

    def fsync(self, fd: int) -> None: ...

    def close(self, fd: int) -> None: ...

    def replace(self, src: Path, dst: Path) -> None: ...

    def fsync_dir(self, directory: Path) -> None: ...

    def free_bytes(self, directory: Path) -> int: ...


class StateStore(Protocol):
    """The disk: durable per-stream state (`durable.store.DurableState`), see docs/durability.md.

    `durable` is False while the state directory cannot be written (a full SD card): serving goes on,
    nothing is journaled, and `space_back()` says when a checkpoint is worth trying again."""

    durable: bool
    unjournaled: int  # readings acknowledged while not durable (a crash then loses their steps)

    def restore(self) -> dict[str, Any]: ...

    def tick(self) -> None:
        """Call every worker iteration: the journal's fsync timer."""
        ...

    def space_back(self) -> bool: ...

    def record(self, entries: Iterable[tuple[int, Reading]]) -> None: ...

    def checkpoint(self) -> bool:
        """Write a checkpoint; False if the disk refused it (the store is then not durable)."""
        ...

    def rebind(self, model_sha256: str) -> None: ...

    def close(self, *, final_checkpoint: bool) -> None: ...
