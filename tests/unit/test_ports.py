"""The ports are complete: every adapter and every test double has every member its port declares, so
no caller needs to probe an object (`getattr(x, "name", default)`) and a double cannot silently lack
what the daemon uses (issue 23: the probes in service/ were the symptom of incomplete ports)."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import pytest
import structlog
from support.fakes import FakeClock, FakeLink

from edge_lstm import ports
from edge_lstm.durable.spill import SqliteSpill
from edge_lstm.durable.store import DurableState
from edge_lstm.engine import Engine
from edge_lstm.onnx_model import load_model
from edge_lstm.service.config import MqttSettings
from edge_lstm.service.mqtt import MqttLink


def members(protocol: type) -> set[str]:
    """What a Protocol declares: its annotated attributes, methods and properties (not dunders)."""
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {
        n for n, v in vars(protocol).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))
    }
    return names


def missing(protocol: type, obj: Any) -> list[str]:
    return sorted(n for n in members(protocol) if not hasattr(obj, n))


def test_members_reads_what_a_protocol_declares() -> None:
    assert {"sha256", "meta", "state_shapes", "step"} <= members(ports.StepModel)
    assert {"doorbell", "batch", "session_present", "publish", "connected"} <= members(ports.Link)
    assert "rows" in members(ports.SpillStore)


def test_links_real_and_fake_have_every_member_of_the_port() -> None:
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    real = MqttLink(MqttSettings(client_id="unit"), inbox, "sensors/+")  # never started: no broker needed
    fake = FakeLink(MqttSettings(), inbox, "sensors/+", 100)
    assert missing(ports.Link, real) == []
    assert missing(ports.Link, fake) == []
    assert fake.doorbell is None and real.doorbell is not None  # the fake's worker polls on the fake clock


def test_model_spill_state_and_clocks_have_every_member_of_their_port(step_model_path: Path, tmp_path: Path) -> None:
    model = load_model(step_model_path)
    assert missing(ports.StepModel, model) == []
    assert len(model.sha256) == 64
    engine = Engine(model)
    spill = SqliteSpill(
        tmp_path / "spill.db",
        model.state_shapes,
        len(model.meta.output.names),
        columns=engine.table.column_specs,
        model_sha256=model.sha256,
    )
    durable = DurableState(tmp_path / "state", engine, model.sha256, structlog.get_logger())
    try:
        assert missing(ports.SpillStore, spill) == []
        assert spill.rows == 0
        assert missing(ports.StateStore, durable) == []
    finally:
        spill.close()
        durable.close(final_checkpoint=False)
    assert missing(ports.Clock, ports.SystemClock()) == []
    assert missing(ports.Clock, FakeClock()) == []


@pytest.mark.parametrize("protocol", [ports.StepModel, ports.SpillStore, ports.Link, ports.Clock, ports.StateStore])
def test_every_port_declares_something(protocol: type) -> None:
    assert members(protocol), protocol
