"""The batch stage: take what the network thread queued and close a batch for the engine.

A batch closes at `target_batch` readings, at `max_batch`, or `max_wait_s` after its first reading,
whichever comes first. At low rates the wait buys fewer, larger model calls (the engine's cost is mostly
per call: ~250 µs whatever the batch size up to a few dozen); at high rates batches fill before it ends.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from ..ports import WAKE, Clock, Inbound, Inbox

# While filling a batch: how often the worker looks whether it is full.
SLICE_S = 0.002


def gather(
    inbox: Inbox[Any],
    woken: Callable[[], None],
    clock: Clock,
    *,
    idle_wait: float,
    max_batch: int,
    target_batch: int,
    max_wait_s: float,
) -> list[Inbound]:
    """Wait up to `idle_wait` for a first message, then fill a batch. `WAKE` items (PUBACKs arrived)
    call `woken`; a wake-up with no reading behind it returns at once, so acks go out without delay."""
    items: list[Inbound] = []
    try:
        item = inbox.get(timeout=idle_wait)
    except queue.Empty:
        return items
    deadline = clock.monotonic() + max_wait_s
    waited = False
    while True:
        if item is WAKE:
            woken()
            if not items and inbox.empty():
                break  # only PUBACKs to act on: ack now rather than wait for readings
        else:
            items.append(item)
            if len(items) >= max_batch:
                break
        try:
            item = inbox.get_nowait()
            continue
        except queue.Empty:
            if waited or len(items) >= target_batch:
                break
        # Sleep (in slices, to see the target reached) rather than block on the queue: blocking wakes
        # this thread, and moves the GIL, once per arriving reading, which at a steady 1,000 readings/s
        # cost more CPU than the readings themselves (docs/performance.md).
        waited = True
        while (remaining := deadline - clock.monotonic()) > 0:
            if len(items) + inbox.qsize() >= target_batch:
                break
            clock.sleep(min(remaining, SLICE_S))
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            break
    return items
