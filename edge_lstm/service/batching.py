"""The batch stage: take what the network thread queued and close a batch for the engine.

A batch closes at `max_batch`, at `target_batch` readings, at `not_before` (the worker's pace), or
`max_wait_s` after its first reading, whichever comes first. The pace is set by the daemon from what
the previous batch cost the worker (`batching.Pace`, `engine.batch_cpu_percent`): most of a small batch's
cost is per call, not per reading (docs/performance.md, round 5), so under steady load waiting for
more readings saves CPU, while a reading after a pause is stepped at once (low latency). At high rates
batches fill to `target_batch` before any wait ends.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..ports import WAKE, Bell, Clock, Inbound, Inbox

# While filling a batch without a doorbell: how often the worker looks whether it is full.
SLICE_S = 0.002

_NEVER = sys.maxsize
_EPSILON_S = 1e-6  # a wait's float leftover (end - now) is not worth a slice
# How long before a batch window ends the network thread reads what arrived during it (`Doorbell.read_by`):
# a thread woken on a busy 2-core machine can be late by a few ms, and a reading read after the window
# closed waits for the next one.
READ_LEAD_S = 0.002


class Doorbell:
    """Lets the worker sleep out a batch window in one wait instead of polling the inbox in slices.

    Polling every 2 ms woke the worker ~10 times per batch at low rates (~15 % of its CPU at a steady
    1,000 readings/s: docs/performance.md). Here the worker says how many waiting messages would fill
    its batch (`wait`), and the network thread, which already looks at the inbox's size after each
    append, rings once that many are there (`arrived`): one wake-up per batch whatever the rate.

    The other way round, `read_by` tells the network thread when the worker next needs what has
    arrived: while the worker processes a batch (`hold`) and sleeps out the next window (`wait`),
    readings that come in small reads can wait in the socket until just before it ends (`READ_LEAD_S`)
    and be read in one go (BatchedClient's nap) instead
    of waking the network thread, and taking the GIL, once per reading (at 1,000 readings/s about
    55 µs of CPU per wake-up: docs/performance.md, round 9). Outside a window it is 0: read at once.
    """

    def __init__(self) -> None:
        self.at = _NEVER  # inbox size at which to ring; read by the network thread without a lock
        self.read_by = 0.0  # time.monotonic(): the network thread may leave small reads until then
        self.light = False  # the last batch closed on time, below its target size (`hold`)
        self._event = threading.Event()
        self.waits = 0
        self.rung = 0

    def arrived(self, waiting: int) -> None:
        """Network thread, after each append: `waiting` messages are now in the inbox."""
        if waiting >= self.at:
            self.at = _NEVER
            self.rung += 1
            self._event.set()

    def wait(self, inbox: Inbox[Any], needed: int, timeout: float) -> bool:
        """Worker: sleep until `needed` messages wait in `inbox` (True), or `timeout` seconds (False)."""
        self._event.clear()
        self.at = needed  # set before looking at the inbox: an append after the look rings
        there = inbox.qsize() >= needed
        if not there:
            self.waits += 1
            if self.light:  # a batch that fills before its window ends needs its readings as they come
                self.read_by = time.monotonic() + timeout - READ_LEAD_S
            there = self._event.wait(timeout)
            self.read_by = 0.0
        self.at = _NEVER
        return there

    def hold(self, seconds: float) -> None:
        """Worker, having just taken a batch: the next one is not stepped sooner than `seconds` from now
        (the pace's last window), so readings arriving while this one is processed can wait too. 0: the
        batch filled to its target (a backlog, a high rate): no waiting, here or in the next window."""
        self.light = seconds > 0
        self.read_by = time.monotonic() + seconds - READ_LEAD_S if self.light else 0.0


class Pace:
    """The batch window's pace: a batch that cost the worker c s of CPU (`time.thread_time` from
    `started` to `finished`: processing and acks) delays the next one to `next_at` = c / share later,
    so that under steady load the worker stays near `cpu_percent` of a core (batches grow with the rate),
    while a reading after a pause is stepped at once. Most of a small batch's cost is per call, not per
    reading (docs/performance.md, rounds 5 and 7)."""

    def __init__(self, clock: Clock, cpu_percent: float) -> None:
        self.clock, self.share = clock, cpu_percent / 100.0
        self.window = 0.0  # the last batch's c / share, seconds
        self.next_at = 0.0  # clock.monotonic(): the next batch closes no sooner (`gather`'s not_before)
        self._cpu0 = -1.0

    def started(self) -> None:
        self._cpu0 = time.thread_time()

    def finished(self) -> None:
        """After a worker cycle; sets `next_at` if the cycle processed a batch."""
        if self._cpu0 >= 0:
            self.window = (time.thread_time() - self._cpu0) / self.share
            self.next_at = self.clock.monotonic() + self.window
            self._cpu0 = -1.0


def _take_waiting(inbox: Inbox[Any], items: list[Inbound], woken: Callable[[], None], max_batch: int) -> None:
    """Move what waits in `inbox` to `items` (up to `max_batch` items); `WAKE`s call `woken`."""
    while len(items) < max_batch:
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            break
        if item is WAKE:
            woken()
        else:
            items.append(item)


def _wait(inbox: Inbox[Any], clock: Clock, bell: Bell | None, needed: int, timeout: float) -> bool:
    """Sleep `timeout` s, or until `needed` messages wait (then True): in one wait with a `bell`, in
    slices without."""
    if bell is not None:
        return bell.wait(inbox, needed, timeout)
    end = clock.monotonic() + timeout
    while (remaining := end - clock.monotonic()) > _EPSILON_S:
        if inbox.qsize() >= needed:
            return True
        clock.sleep(min(remaining, SLICE_S))
    return inbox.qsize() >= needed


def gather(
    inbox: Inbox[Any],
    woken: Callable[[], None],
    clock: Clock,
    *,
    idle_wait: float,
    max_batch: int,
    target_batch: int,
    max_wait_s: float,
    not_before: float = float("inf"),
    bell: Bell | None = None,
    hold_s: float = 0.0,
) -> list[Inbound]:
    """Wait up to `idle_wait` for a first message, then fill a batch. It closes at `max_batch`, at
    `target_batch` once nothing more waits, at `not_before` (`clock.monotonic()` time; at once if that
    has passed), or `max_wait_s` after the first message, whichever comes first. `WAKE` items (PUBACKs
    arrived) call `woken`; a wake-up with no reading behind it returns at once, so acks go out without
    delay. With a `bell` (rung by the link as messages arrive) the wait is one sleep; without one,
    slices of `SLICE_S`; a batch taken tells the `bell` that the next is `hold_s` away (`Doorbell.hold`)."""
    items: list[Inbound] = []
    try:
        # A signal handler that interrupts this wait must put something (cli/run.py, `_wake`): CPython
        # before 3.13 can otherwise go on waiting past the timeout until a message arrives.
        first = inbox.get(timeout=idle_wait)
    except queue.Empty:
        return items
    now = clock.monotonic()
    close_at = min(now + max_wait_s, not_before)
    if first is WAKE:
        woken()
    else:
        items.append(first)
    _take_waiting(inbox, items, woken, max_batch)
    if not items:
        return items  # only PUBACKs to act on: ack now rather than wait for readings
    # Sleep rather than block on the queue: blocking wakes this thread, and moves the GIL, once per
    # arriving reading, which at a steady 1,000 readings/s cost more CPU than the readings themselves
    # (docs/performance.md).
    filled = True  # a wait that ends with the inbox at the target (what arrived may be WAKEs): wait on
    while filled and len(items) < min(target_batch, max_batch):
        remaining = close_at - clock.monotonic()
        if remaining <= _EPSILON_S:
            break
        filled = _wait(inbox, clock, bell, target_batch - len(items), remaining)
        _take_waiting(inbox, items, woken, max_batch)
    if bell is not None:
        bell.hold(hold_s if len(items) < min(target_batch, max_batch) else 0.0)  # filled: read on at once
    return items
