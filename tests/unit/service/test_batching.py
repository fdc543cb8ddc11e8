"""The batch stage: a batch closes at its target size, at max_batch, at its pace (`not_before`), or
max_wait after its first reading."""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any

import pytest
from support.fakes import FakeClock

from edge_lstm.ports import WAKE
from edge_lstm.service.batching import READ_LEAD_S, SLICE_S, Doorbell, gather


class ArrivingClock(FakeClock):
    """Readings arrive while the worker sleeps: `per_sleep` of them each slice, for `slices` slices."""

    def __init__(self, inbox: queue.SimpleQueue[Any], per_sleep: int, slices: int = 10**9) -> None:
        super().__init__()
        self.inbox, self.per_sleep, self.sleeps, self.n, self.slices = inbox, per_sleep, 0, 1000, slices

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.sleeps += 1
        if self.sleeps > self.slices:
            return
        for _ in range(self.per_sleep):
            self.n += 1
            self.inbox.put(self.n)


def _gather(inbox: queue.SimpleQueue[Any], clock: FakeClock, woken: Any = lambda: None, **kw: Any) -> list[Any]:
    args: dict[str, Any] = dict(idle_wait=0.01, max_batch=1024, target_batch=32, max_wait_s=0.020)
    args.update(kw)
    return gather(inbox, woken, clock, **args)


def _filled(n: int) -> queue.SimpleQueue[Any]:
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for i in range(n):
        q.put(i)
    return q


def test_nothing_arrives_returns_empty_after_idle_wait() -> None:
    assert _gather(queue.SimpleQueue(), FakeClock()) == []


def test_a_small_batch_waits_out_max_wait_in_slices() -> None:
    clock = FakeClock()
    t0 = clock.monotonic()
    assert _gather(_filled(10), clock) == list(range(10))
    assert clock.monotonic() - t0 == pytest.approx(0.020)  # slept until the deadline, no longer


def test_a_batch_at_its_target_goes_at_once() -> None:
    clock = FakeClock()
    t0 = clock.monotonic()
    assert _gather(_filled(40), clock) == list(range(40))  # everything already there, in order
    assert clock.monotonic() == t0


def test_the_batch_closes_when_arrivals_reach_the_target() -> None:
    inbox = _filled(1)
    clock = ArrivingClock(inbox, per_sleep=8)
    got = _gather(inbox, clock, max_wait_s=1.0)
    assert clock.sleeps == 4 and len(got) == 33  # 1 + 4 x 8 >= 32: stepped after 4 slices, not 1 s
    assert clock.monotonic() - 1000.0 == pytest.approx(4 * SLICE_S)


def test_a_batch_goes_at_once_when_its_pace_allows() -> None:
    clock = FakeClock()
    assert _gather(_filled(3), clock, not_before=clock.monotonic() - 1, max_wait_s=0.050) == [0, 1, 2]
    assert clock.monotonic() == 1000.0  # the worker is within its budget: light load, no wait


def test_a_batch_waits_for_its_pace_and_grows_meanwhile() -> None:
    inbox = _filled(1)
    clock = ArrivingClock(inbox, per_sleep=1)  # one reading every 2 ms slice
    got = _gather(inbox, clock, not_before=clock.monotonic() + 0.010, max_wait_s=0.050, target_batch=64)
    assert clock.monotonic() - 1000.0 == pytest.approx(0.010) and len(got) == 6  # 1 + 5 slices


def test_max_wait_bounds_the_pace() -> None:
    clock = FakeClock()
    got = _gather(_filled(2), clock, not_before=clock.monotonic() + 600, max_wait_s=0.020)
    assert got == [0, 1] and clock.monotonic() - 1000.0 == pytest.approx(0.020)


def test_the_target_ends_a_paced_wait() -> None:
    inbox = _filled(1)
    clock = ArrivingClock(inbox, per_sleep=8)
    got = _gather(inbox, clock, not_before=clock.monotonic() + 600, max_wait_s=600.0, target_batch=32)
    assert len(got) == 33 and clock.sleeps == 4  # heavy load: full batches at once, whatever the pace


def test_max_batch_caps_and_leaves_the_rest_queued() -> None:
    inbox = _filled(100)
    assert _gather(inbox, FakeClock(), max_batch=50) == list(range(50))
    assert inbox.qsize() == 50


def test_a_wake_alone_returns_at_once_for_acks() -> None:
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    inbox.put(WAKE)
    woken: list[int] = []
    clock = FakeClock()
    assert _gather(inbox, clock, woken=lambda: woken.append(1)) == [] and woken == [1]
    assert clock.monotonic() == 1000.0


def test_wakes_among_readings_are_noted_and_dropped() -> None:
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for item in (WAKE, 1, WAKE, 2, 3):
        inbox.put(item)
    woken: list[int] = []
    assert _gather(inbox, FakeClock(), woken=lambda: woken.append(1), target_batch=3) == [1, 2, 3]
    assert woken == [1, 1]


# ---- with a doorbell (the link rings it as messages arrive) ----------------------------------------


def test_with_a_doorbell_the_window_is_slept_out_in_one_wait() -> None:
    clock, bell = FakeClock(), Doorbell()
    slept: list[float] = []
    clock.sleep = slept.append  # type: ignore[method-assign,assignment]
    assert _gather(_filled(10), clock, bell=bell, max_wait_s=0.005) == list(range(10))
    assert bell.waits == 1 and slept == []  # no polling slices


def test_the_doorbell_ends_the_wait_when_arrivals_reach_the_target() -> None:
    inbox, bell = _filled(1), Doorbell()

    def network_thread() -> None:
        while bell.at == sys.maxsize:  # until the worker waits, for 31 more
            time.sleep(0.001)
        for i in range(31):
            inbox.put(100 + i)
            bell.arrived(inbox.qsize())

    t = threading.Thread(target=network_thread)
    t.start()
    got = _gather(inbox, FakeClock(), bell=bell, max_wait_s=600.0)  # without the ring: 10 minutes
    t.join()
    assert len(got) == 32 and bell.rung == 1 and bell.at == sys.maxsize


def test_the_doorbell_does_not_wait_for_what_is_already_there() -> None:
    inbox, bell = _filled(5), Doorbell()
    bell.wait(inbox, 5, 600.0)
    assert bell.waits == 0 and bell.at == sys.maxsize
    bell.arrived(10**6)  # nobody waits: no ring
    assert bell.rung == 0


def test_with_a_doorbell_a_paced_wait_is_one_wait() -> None:
    bell, clock = Doorbell(), FakeClock()
    t0 = time.monotonic()
    got = _gather(_filled(2), clock, bell=bell, not_before=clock.monotonic() + 0.005, max_wait_s=600.0)
    assert got == [0, 1] and bell.waits == 1 and time.monotonic() - t0 < 60


def test_while_the_worker_sleeps_out_a_window_the_network_thread_may_leave_small_reads_until_just_before_it_ends() -> (
    None
):
    inbox, bell = _filled(1), Doorbell()
    bell.hold(0.001)  # the last batch closed on time, below its target
    seen: list[float] = []

    def network_thread() -> None:
        while bell.at == sys.maxsize:  # until the worker waits
            time.sleep(0.001)
        seen.append(bell.read_by - time.monotonic())

    t = threading.Thread(target=network_thread)
    t0 = time.monotonic()
    t.start()
    bell.wait(inbox, 10, 0.5)
    t.join()
    # read_by is the window's end less READ_LEAD_S, as seen from the network thread during the wait
    assert 0 < seen[0] <= 0.5 - READ_LEAD_S and seen[0] >= 0.5 - READ_LEAD_S - (time.monotonic() - t0)
    assert bell.read_by == 0.0  # outside a window: read at once


def test_after_a_full_batch_the_network_thread_reads_on_so_the_next_can_fill() -> None:
    inbox, bell = _filled(1), Doorbell()
    assert _gather(_filled(40), FakeClock(), bell=bell, hold_s=0.020) == list(range(40))  # target 32: full
    assert bell.read_by == 0.0 and not bell.light
    bell.wait(inbox, 10, 0.01)
    assert bell.read_by == 0.0


def test_no_read_by_when_the_batch_is_already_there() -> None:
    bell = Doorbell()
    bell.hold(0.001)
    bell.wait(_filled(5), 5, 600.0)
    assert bell.read_by <= time.monotonic()


def test_a_batch_closed_on_time_holds_small_reads_for_the_next_window() -> None:
    bell = Doorbell()
    t0 = time.monotonic()
    assert _gather(_filled(10), FakeClock(), bell=bell, hold_s=0.020) == list(range(10))  # below target 32
    assert bell.light and t0 + 0.020 - READ_LEAD_S <= bell.read_by <= time.monotonic() + 0.020 - READ_LEAD_S
    _gather(_filled(10), FakeClock(), bell=bell)  # no window known (the first batch): read at once
    assert bell.read_by == 0.0 and not bell.light
