"""The batch stage: take what the network thread queued and close a batch for the engine.

A batch closes at `target_batch` readings, at `max_batch`, or `max_wait_s` after its first reading,
whichever comes first. At low rates the wait buys fewer, larger model calls: most of a small batch's
cost is per call (at a steady 1,000 readings/s a batch of ~23 cost the worker ~2.5 ms: engine 1.4,
decode/encode 0.5, publish, journal and acks 0.5, waits and the batch write 0.2; docs/performance.md,
round 5); at high rates batches fill before the wait ends.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..ports import WAKE, Bell, Clock, Inbound, Inbox

# While filling a batch without a doorbell: how often the worker looks whether it is full.
SLICE_S = 0.002

_NEVER = sys.maxsize


class Doorbell:
    """Lets the worker sleep out a batch window in one wait instead of polling the inbox in slices.

    Polling every 2 ms woke the worker ~10 times per batch at low rates (~15 % of its CPU at a steady
    1,000 readings/s: docs/performance.md). Here the worker says how many waiting messages would fill
    its batch (`wait`), and the network thread, which already looks at the inbox's size after each
    append, rings once that many are there (`arrived`): one wake-up per batch whatever the rate.
    """

    def __init__(self) -> None:
        self.at = _NEVER  # inbox size at which to ring; read by the network thread without a lock
        self._event = threading.Event()
        self.waits = 0
        self.rung = 0

    def arrived(self, waiting: int) -> None:
        """Network thread, after each append: `waiting` messages are now in the inbox."""
        if waiting >= self.at:
            self.at = _NEVER
            self.rung += 1
            self._event.set()

    def wait(self, inbox: Inbox[Any], needed: int, timeout: float) -> None:
        """Worker: sleep until `needed` messages wait in `inbox`, or `timeout` seconds."""
        self._event.clear()
        self.at = needed  # set before looking at the inbox: an append after the look rings
        if inbox.qsize() < needed:
            self.waits += 1
            self._event.wait(timeout)
        self.at = _NEVER


def gather(
    inbox: Inbox[Any],
    woken: Callable[[], None],
    clock: Clock,
    *,
    idle_wait: float,
    max_batch: int,
    target_batch: int,
    max_wait_s: float,
    bell: Bell | None = None,
) -> list[Inbound]:
    """Wait up to `idle_wait` for a first message, then fill a batch. `WAKE` items (PUBACKs arrived)
    call `woken`; a wake-up with no reading behind it returns at once, so acks go out without delay.
    With a `bell` (rung by the link as messages arrive) the window is slept out in one wait; without
    one, in slices of `SLICE_S`."""
    items: list[Inbound] = []
    try:
        # A signal handler that interrupts this wait must put something (cli/run.py, `_wake`): CPython
        # before 3.13 can otherwise go on waiting past the timeout until a message arrives.
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
        # Sleep rather than block on the queue: blocking wakes this thread, and moves the GIL, once per
        # arriving reading, which at a steady 1,000 readings/s cost more CPU than the readings themselves
        # (docs/performance.md).
        waited = True
        _sleep_out(inbox, clock, bell, deadline, target_batch - len(items))
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            break
    return items


def _sleep_out(inbox: Inbox[Any], clock: Clock, bell: Bell | None, deadline: float, needed: int) -> None:
    """Wait until `needed` more messages are in `inbox` or the monotonic `deadline`: in one wait on the
    link's `bell`, else in slices of `SLICE_S`."""
    if bell is not None:
        remaining = deadline - clock.monotonic()
        if remaining > 0:
            bell.wait(inbox, needed, remaining)
        return
    while (remaining := deadline - clock.monotonic()) > 0:
        if inbox.qsize() >= needed:
            break
        clock.sleep(min(remaining, SLICE_S))
