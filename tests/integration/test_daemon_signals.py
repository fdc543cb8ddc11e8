"""Signals: SIGHUP stops the daemon as SIGTERM does (until hot reload exists), never silently."""

from __future__ import annotations

import signal

import pytest
from support.config import daemon_config
from support.traffic import reading_payload

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def test_sighup_stops_cleanly(broker, step_model_path, tmp_path, run_daemon, collector, publisher):
    col = collector(broker.port, ["edge-lstm/#"])
    d = run_daemon(daemon_config(broker, step_model_path, tmp_path / "state"))
    d.wait_ready()
    pub = publisher(broker.port)
    for i in range(5):
        pub.send("sensors/pump-7", reading_payload(T0 + i, [0.1 * i, 0.2, 0.3]))
    pub.flush()
    col.wait_count("edge-lstm/scores/", 5)

    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    assert d.proc.wait(timeout=30) == 0, d.text()[-3000:]
    stopping = d.wait_event("stopping")
    assert stopping["reason"] == "signal SIGHUP"
    assert d.wait_event("stopped")["offline_published"] is True
    after = collector(broker.port, ["edge-lstm/status"])
    after.wait_for(lambda c: ("edge-lstm/status", b"offline", True) in c.snapshot(), what="retained offline")

    # The final checkpoint was written: the next start restores the stream from it, with no journal left.
    d.start()
    restored = d.wait_event("state_restored")
    assert restored["checkpoint"] is True and restored["streams"] == 1 and restored["replayed"] == 0
    assert d.terminate() == 0
