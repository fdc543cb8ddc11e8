"""A full SD card degrades the daemon, never stops it (issue 20): the real Daemon on a fake link and
clock, its state directory behind a disk port that fails every write with ENOSPC while `full`
(tests/support/disk.py). While full, every reading gets its result and its ack, one warning names the
directory and the error, the stats say `durable: false`; once space is back a checkpoint is written at
once and the state is durable again, and a restart continues exactly."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from support.disk import FaultyDisk
from support.fakes import FakeClock, FakeNotifier, LinkFactory
from support.faults import state_difference

from edge_lstm.durable.store import generations
from edge_lstm.onnx_model import load_model
from edge_lstm.service.config import load_settings
from edge_lstm.service.daemon import Daemon

T0 = 1_764_000_000.0
STREAMS = ("a", "b", "c")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("EDGE_LSTM_")]:
        monkeypatch.delenv(k)


def make(step_model_path: Path, state: Path, disk: FaultyDisk, metrics_port: int = 0) -> tuple[Daemon, Any, FakeClock]:
    settings = load_settings(
        None,
        model=str(step_model_path),
        state_dir=str(state),
        checkpoint={"enabled": True, "interval_s": 30},
        log={"stats_interval_s": 0},
        metrics={"port": metrics_port},
    )
    factory, clock = LinkFactory(), FakeClock()
    d = Daemon(
        settings,
        load_model(step_model_path),
        notifier=FakeNotifier(),
        link_factory=factory,
        clock=clock,
        disk=disk,
    )
    d.start()
    return d, factory.link, clock


def feed(d: Daemon, link: Any, clock: FakeClock, steps: range) -> list[int]:
    mids = []
    for t in steps:
        for s in STREAMS:
            mids.append(
                link.deliver(f"sensors/{s}", json.dumps({"ts": T0 + t, "values": [0.1 * t, 1.0, 2.0]}).encode())
            )
        d.iteration(0.0)
        clock.advance(1.0)
    return mids


def warnings(logs: Sequence[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == event]


def test_a_disk_filling_up_while_streaming(step_model_path: Path, tmp_path: Path) -> None:
    disk = FaultyDisk()
    d, link, clock = make(step_model_path, tmp_path / "state", disk)
    feed(d, link, clock, range(0, 10))
    assert d.stats()["durable"] is True
    with structlog.testing.capture_logs() as logs:
        disk.full = True
        mids = feed(d, link, clock, range(10, 130))  # two minutes full, a checkpoint interval passes
        assert disk.refused > 0
        stats = d.stats()
        full = warnings(logs, "state_dir_unwritable")
        assert stats["durable"] is False and stats["unjournaled"] > 0
        assert set(mids) <= {m for m, _ in link.acked}  # every reading acked ...
        assert len(link.results()) == 130 * len(STREAMS)  # ... and every result published
        assert 1 <= len(full) <= 3  # at most once a minute
        assert full[0]["dir"] == str(tmp_path / "state") and "No space left" in full[0]["error"]
        disk.full = False
        feed(d, link, clock, range(130, 140))  # space is back: a checkpoint within seconds
        assert d.stats()["durable"] is True
        assert warnings(logs, "state_dir_writable")
    feed(d, link, clock, range(140, 150))
    before = d.engine
    d.shutdown()
    # Exact continuation after a restart: the restored state is the state the daemon stopped with.
    again, _, _ = make(step_model_path, tmp_path / "state", FaultyDisk())
    for s in STREAMS:
        assert state_difference(before, again.engine, s) == 0.0
        assert again.engine.table.row(s).steps == 150
    again.shutdown()


def test_starting_on_a_full_disk_serves_degraded(step_model_path: Path, tmp_path: Path) -> None:
    disk = FaultyDisk()
    d, link, clock = make(step_model_path, tmp_path / "state", disk)
    feed(d, link, clock, range(0, 5))
    d.shutdown()
    disk.full = True
    port = _free_port() if _has_prometheus() else 0
    with structlog.testing.capture_logs() as logs:
        d, link, clock = make(step_model_path, tmp_path / "state", disk, port)  # restores, cannot write
        mids = feed(d, link, clock, range(5, 20))
    assert len(warnings(logs, "state_dir_unwritable")) == 1
    assert d.stats()["durable"] is False
    d.log_stats()  # the systemd STATUS line says so too
    assert d.notifier.sent[-1].endswith("NOT DURABLE (state directory full)")  # type: ignore[attr-defined]
    if port:
        assert "edge_lstm_durable 0.0" in _metrics(port)
    assert set(mids) <= {m for m, _ in link.acked} and len(link.results()) == 15 * len(STREAMS)
    assert d.engine.table.row("a").steps == 20  # restored, then served
    disk.full = False
    feed(d, link, clock, range(20, 30))
    assert d.stats()["durable"] is True
    d.log_stats()
    assert "DURABLE" not in d.notifier.sent[-1]  # type: ignore[attr-defined]
    if port:
        assert "edge_lstm_durable 1.0" in _metrics(port)
    d.shutdown()


def _has_prometheus() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_after_a_disk_gap_older_generations_are_dropped(step_model_path: Path, tmp_path: Path) -> None:
    """The journal has a hole while the disk was full: only the checkpoint written after it may be
    used, so the generation before the hole is not kept as a fallback."""
    disk = FaultyDisk()
    d, link, clock = make(step_model_path, tmp_path / "state", disk)
    feed(d, link, clock, range(0, 40))  # a checkpoint at 30 s: two generations
    assert len(generations(tmp_path / "state")) == 2
    disk.full = True
    feed(d, link, clock, range(40, 50))
    disk.full = False
    feed(d, link, clock, range(50, 60))
    assert d.stats()["durable"] is True
    assert len(generations(tmp_path / "state")) == 1
    d.shutdown()


def test_a_state_dir_that_cannot_be_created_is_one_line_exit_2(step_model_path: Path, tmp_path: Path) -> None:
    from edge_lstm.durable.store import DurableState, StateDirUnusable
    from edge_lstm.engine import Engine

    (tmp_path / "file").write_text("not a directory")
    model = load_model(step_model_path)
    with pytest.raises(StateDirUnusable) as e:
        DurableState(tmp_path / "file" / "state", Engine(model), model.sha256, structlog.get_logger())
    assert e.value.exit_code == 2 and "\n" not in str(e.value)
    assert str(tmp_path / "file" / "state") in str(e.value) and "EDGE_LSTM_STATE_DIR" in str(e.value)
