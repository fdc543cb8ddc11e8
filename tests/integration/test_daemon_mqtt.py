"""The daemon against a real mosquitto: results, availability, rejections, shutdown."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm import load_model
from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.scoring import Scorer

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def reading(i: int, scale: float = 1.0) -> bytes:
    return reading_payload(T0 + i, [scale * (i % 7) / 7, scale * (i % 5) / 5, scale * (i % 3) / 3])


def test_reading_yields_result_and_availability(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    col = collector(broker.port, ["edge-lstm/#"])
    d = run_daemon(daemon_config(broker, step_model_path, tmp_path / "state"))
    d.wait_ready()
    col.wait_for(lambda c: ("edge-lstm/status", b"online", False) in c.snapshot("edge-lstm/status"), what="online")
    pub = publisher(broker.port)
    for i in range(3):
        pub.send("sensors/pump-7", reading(i))
    pub.send("sensors/pump-7", reading_payload(T0 + 3, a=0.5, b=0.25, c=1.0))  # one field per feature
    pub.flush()
    results = col.wait_count("edge-lstm/scores/", 4)
    assert [t for t, _, _ in col.snapshot("edge-lstm/scores/")] == ["edge-lstm/scores/pump-7"] * 4
    r = results[0]
    assert set(r) >= {"stream", "ts", "score", "anomaly", "threshold", "prediction", "warming_up", "model"}
    assert r["stream"] == "pump-7" and r["ts"] == T0
    assert r["model"] == {"name": "test-model", "version": "0.0.1"}
    assert r["warming_up"] is True and r["anomaly"] is False and r["score"] == 0.0
    assert set(r["prediction"]) == {"a", "b", "c"}
    assert [x["ts"] for x in results] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert results[2]["warming_up"] is False and results[2]["score"] > 0
    # The calibrated 3.0 carried to 1 − scoring.risk (docs/scoring.md), as the engine computes it.
    assert results[2]["threshold"] == float(f"{Scorer(load_model(step_model_path).meta).threshold:.6g}") > 3.0

    # `online` is retained: a late subscriber sees it.
    late = collector(broker.port, ["edge-lstm/status"])
    late.wait_for(lambda c: ("edge-lstm/status", b"online", True) in c.snapshot(), what="retained online")

    assert d.terminate() == 0
    # `offline` is retained after a clean stop.
    after = collector(broker.port, ["edge-lstm/status"])
    after.wait_for(lambda c: ("edge-lstm/status", b"offline", True) in c.snapshot(), what="retained offline")
    names = [e["event"] for e in d.events()]
    assert "stopping" in names and "stopped" in names
    stopped = [e for e in d.events() if e["event"] == "stopped"][0]
    assert stopped["offline_published"] is True


def test_drain_on_sigterm_acks_everything(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    """Readings received before SIGTERM get results; the session keeps nothing unacked for them."""
    col = collector(broker.port, ["edge-lstm/scores/#"])
    d = run_daemon(daemon_config(broker, step_model_path, tmp_path / "state"))
    d.wait_ready()
    pub = publisher(broker.port)
    for i in range(200):
        pub.send(f"sensors/s{i % 20}", reading(i // 20))
    pub.flush()
    col.wait_count("edge-lstm/scores/", 200)
    assert d.terminate() == 0
    stats = [e for e in d.events() if e["event"] == "stats"][-1]
    assert stats["results"] == 200 and stats["acked"] == 200 and stats["unacked"] == 0


def test_sigterm_while_logging_hard_still_exits(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    publisher: Callable[[int], Publisher],
) -> None:
    """SIGTERM lands while the main thread is busy writing log lines (every rejection logged).

    The signal handler must not log: it would run in the main thread, possibly while that thread holds
    structlog's non-reentrant output lock, and the shutdown would hang forever (seen once in CI)."""
    for attempt in range(3):
        d = run_daemon(
            daemon_config(
                broker,
                step_model_path,
                tmp_path / f"state{attempt}",
                log={"format": "json", "level": "info", "rejections_burst": 1_000_000},
            )
        )
        d.wait_ready()
        pub = publisher(broker.port)
        for i in range(3000):
            pub.send(f"sensors/noisy{i % 50}", b"not json")
        pub.flush()
        d.wait_event("rejected", count=200)  # the worker is logging now
        assert d.terminate(timeout=30) == 0
        assert any(e.get("event") == "stopping" and e.get("reason") == "signal SIGTERM" for e in d.events())
