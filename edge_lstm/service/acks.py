"""In-order acknowledgement: a received message is acked only once its publishes are handed over.

The spec expects PUBACKs in arrival order, and the delivery guarantee (README, "Delivery") needs the
result to be with the broker before the reading is forgotten by it. The ledger keeps the received
messages in arrival order; `take_ready` releases the longest prefix whose publishes the broker has.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..reading import Reading


@dataclass(slots=True)
class Pending:
    """A received message waiting for its acknowledgement."""

    mid: int
    qos: int
    generation: int  # connection it arrived on
    t: float  # monotonic time it was processed
    handles: list[Any] = field(default_factory=list)  # its publishes, all to be handed over first
    reading: Reading | None = None  # the reading it stepped (journaled before the ack); None if rejected
    batch: int = 0  # the engine call it was stepped in


class AckLedger:
    def __init__(self) -> None:
        self._pending: deque[Pending] = deque()
        self.max_outstanding = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, p: Pending) -> None:
        self._pending.append(p)

    def note_size(self) -> None:
        """Record the high-water mark (once per batch: cheaper than per message)."""
        if len(self._pending) > self.max_outstanding:
            self.max_outstanding = len(self._pending)

    def oldest_t(self) -> float | None:
        return self._pending[0].t if self._pending else None

    def take_ready(self, handed_over: Callable[[Any], bool]) -> list[Pending]:
        """Remove and return, in arrival order, the messages whose publishes are all handed over,
        stopping at the first that is not (later ones wait for it: acks stay in order)."""
        pending = self._pending
        ready: list[Pending] = []
        while pending and all(handed_over(h) for h in pending[0].handles):
            ready.append(pending.popleft())
        return ready
