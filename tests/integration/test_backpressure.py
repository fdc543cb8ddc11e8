"""Slow consumer: when the worker falls behind, the daemon stops reading from the broker instead of
queueing without limit, and still loses nothing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.daemon import start_in_thread
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.service.config import load_settings
from edge_lstm.service.daemon import Daemon

pytestmark = pytest.mark.integration


class SlowDaemon(Daemon):
    """A worker that takes 10 ms per batch: far slower than the broker delivers a burst."""

    def _process(self, batch):  # type: ignore[no-untyped-def]
        time.sleep(0.01)
        super()._process(batch)


def test_inbound_queue_stays_bounded_and_nothing_is_lost(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for k in [k for k in os.environ if k.startswith("EDGE_LSTM_")]:
        monkeypatch.delenv(k)
    max_queue = 200
    settings = load_settings(
        None,
        model=str(step_model_path),
        state_dir=str(tmp_path),
        engine={"max_queue": max_queue, "max_batch": 20},
        mqtt={"port": broker.port, "client_id": "slow-consumer"},
    )
    d = SlowDaemon(settings)
    stop, t = start_in_thread(d)
    col = collector(broker.port, ["edge-lstm/scores/#"])
    pub = publisher(broker.port)
    n_streams, steps = 20, 100
    for step in range(steps):
        for s in range(n_streams):
            pub.send(f"sensors/m{s}", reading_payload(1_700_000_000 + step, [1.0, 2.0, 3.0]))
    pub.flush()
    results = col.wait_count("edge-lstm/scores/", n_streams * steps, timeout=60)
    stop.set()
    t.join(30)
    link = d.link
    print(
        f"\nslow consumer: {len(results)} results, reading paused {link.holds} times for "
        f"{link.held_s:.2f} s, at most {link.max_inbox} readings waiting (max_queue {max_queue})"
    )
    assert link.holds > 0  # the worker really fell behind
    # Reading pauses at max_queue waiting readings; while the worker itself waits for PUBACKs (which only
    # the network thread reads) it reads on, up to 1.5 x max_queue. +1: a wake-up marker may sit there.
    assert link.max_inbox <= max_queue + max_queue // 2 + 1
    assert {(r["stream"], r["ts"]) for r in results} == {
        (f"m{s}", 1_700_000_000.0 + step) for s in range(n_streams) for step in range(steps)
    }
    assert d.stats()["rejected"] == {}


class CappedDaemon(Daemon):
    """A hard cap of unacknowledged readings small enough to reach with a test's backlog (30,000 in use)."""

    hard_unacked = 300


def test_a_backlog_that_holds_the_pubacks_back_stays_under_the_hard_cap_and_loses_nothing(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resumed session's backlog: mosquitto sends all of it, the PUBACKs of the daemon's results queue
    behind it. The worker stops at `hard_unacked` unacknowledged readings (a flood of 100,000 once ran
    results past paho's 65,535 packet ids and lost one for good), and the network thread reads on past
    its usual bound, since only reading brings those PUBACKs: everything is scored and acknowledged."""
    for k in [k for k in os.environ if k.startswith("EDGE_LSTM_")]:
        monkeypatch.delenv(k)
    settings = load_settings(
        None,
        model=str(step_model_path),
        state_dir=str(tmp_path),
        engine={"max_queue": 2000, "max_batch": 100},
        mqtt={"port": broker.port, "client_id": "capped-consumer", "max_inflight": 1000},
    )
    first = CappedDaemon(settings)  # makes the persistent session
    stop, t = start_in_thread(first)
    stop.set()
    t.join(30)
    pub = publisher(broker.port)
    n = 20000
    for i in range(n):  # queued for the session while the daemon is away
        pub.send(f"sensors/b{i}", reading_payload(1_700_000_000, [1.0, 2.0, 3.0]))
    pub.flush()
    col = collector(broker.port, ["edge-lstm/scores/#"])
    d = CappedDaemon(settings)
    stop, t = start_in_thread(d)
    results = col.wait_count("edge-lstm/scores/", n, timeout=60)
    deadline = time.monotonic() + 30
    while (d.counters.acked < n or len(d.ledger)) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(30)
    assert len({r["stream"] for r in results}) == n and d.counters.acked == n and not len(d.ledger)
    assert d.ledger.max_outstanding <= CappedDaemon.hard_unacked + settings.engine.max_batch
