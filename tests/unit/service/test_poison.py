"""No single message can stop the daemon (issue 20): a command whose handling raises, a Response Topic
with wildcards or naming one of the daemon's own topics, a reading whose step raises. Each is logged,
counted, answered or rejected, and acknowledged; later messages are served. Through the real Daemon on a
fake link (tests/support/fakes.py) that, like paho, refuses to publish on a topic with wildcards."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fakes import FakeClock, FakeNotifier, LinkFactory

from edge_lstm.onnx_model import load_model
from edge_lstm.service.config import load_settings
from edge_lstm.service.daemon import Daemon

T0 = 1_764_000_000.0
REPLY = "edge-lstm/command/reply"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("EDGE_LSTM_")]:
        monkeypatch.delenv(k)


class PahoLikeLinkFactory(LinkFactory):
    """paho raises ValueError for a publish topic holding a wildcard; so does this link."""

    def __call__(self, *args: Any) -> Any:
        link = super().__call__(*args)
        publish = link.publish

        def strict_publish(topic: str, *rest: Any, **kw: Any) -> Any:
            if "+" in topic or "#" in topic:
                raise ValueError("Publish topic cannot contain wildcards.")
            return publish(topic, *rest, **kw)

        link.publish = strict_publish  # type: ignore[method-assign]
        return link


def make(step_model_path: Path, tmp_path: Path, **commands: Any) -> tuple[Daemon, Any]:
    settings = load_settings(
        None,
        model=str(step_model_path),
        state_dir=str(tmp_path / "state"),
        checkpoint={"enabled": False},
        log={"stats_interval_s": 0},
        commands={"enabled": True, **commands},
        homeassistant={"enabled": True},
    )
    factory = PahoLikeLinkFactory()
    d = Daemon(settings, load_model(step_model_path), notifier=FakeNotifier(), link_factory=factory, clock=FakeClock())
    d.start()
    return d, factory.link


def reading(ts: float) -> bytes:
    return json.dumps({"ts": ts, "values": [1.0, 2.0, 3.0]}).encode()


def by_commands(sent: list[Any]) -> list[Any]:
    """What commands caused: without what the daemon publishes on its own (stats, and Home Assistant's
    daemon device: ha_bridge)."""
    return [s for s in sent if s.topic != "edge-lstm/stats" and "/edge_lstm/daemon_" not in s.topic]


def replies(link: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(s.topic, json.loads(s.payload)) for s in link.sent if s.topic.startswith(("ops/", "edge-lstm/command"))]


@pytest.mark.parametrize(
    "response_topic, why",
    [
        ("a/+/b", "wildcard"),
        ("ops/#", "wildcard"),
        ("edge-lstm/status", "own topics"),
        ("edge-lstm/stats", "own topics"),
        ("edge-lstm/alarms/pump-7", "own topics"),
        ("edge-lstm/scores/pump-7", "own topics"),
        ("sensors/pump-7", "own topics"),
        ("edge-lstm/command", "own topics"),
        ("homeassistant/binary_sensor/x/config", "discovery prefix"),
        ("homeassistant/status", "own topics"),
        ("$SYS/broker/x", "broker ($) topic"),
    ],
)
def test_a_bad_response_topic_is_refused_on_the_reply_topic_and_acked(
    step_model_path: Path, tmp_path: Path, response_topic: str, why: str
) -> None:
    d, link = make(step_model_path, tmp_path)
    mid = link.deliver(
        "edge-lstm/command", b'{"op": "reset", "stream": "pump-7"}', response_topic=response_topic, correlation=b"c1"
    )
    later = link.deliver("edge-lstm/command", b'{"op": "checkpoint"}', response_topic="ops/replies/me")
    d.iteration(0.01)
    got = replies(link)
    assert got[0][0] == REPLY and got[0][1]["ok"] is False and why in got[0][1]["error"]
    assert link.sent[0].correlation == b"c1"
    assert got[1][0] == "ops/replies/me"  # later commands are answered
    assert {m for m, _ in link.acked} == {mid, later}
    assert all(s.topic in (REPLY, "ops/replies/me") for s in by_commands(link.sent))  # nothing else written
    assert d.control.command_errors == 1


def test_response_prefix_confines_replies(step_model_path: Path, tmp_path: Path) -> None:
    d, link = make(step_model_path, tmp_path, response_prefix="ops/")
    link.deliver("edge-lstm/command", b'{"op": "checkpoint"}', response_topic="elsewhere/x")
    link.deliver("edge-lstm/command", b'{"op": "checkpoint"}', response_topic="ops/me")
    d.iteration(0.01)
    got = replies(link)
    assert [t for t, _ in got] == [REPLY, "ops/me"] and "response_prefix" in got[0][1]["error"]


def test_a_command_that_raises_is_answered_counted_and_acked(
    step_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, link = make(step_model_path, tmp_path)

    def boom(stream: str) -> None:
        raise RuntimeError("inspect broke")

    monkeypatch.setattr(d.engine, "describe_stream", boom)
    mid = link.deliver("edge-lstm/command", b'{"op": "inspect", "stream": "x"}')
    r = link.deliver("sensors/pump-7", reading(T0))
    d.iteration(0.01)
    got = replies(link)
    assert got[0][1]["ok"] is False and "inspect broke" in got[0][1]["error"]
    assert d.control.command_errors == 1
    assert {m for m, _ in link.acked} == {mid, r} and len(link.results()) == 1


def test_a_reading_whose_step_raises_is_rejected_the_others_are_served(
    step_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, link = make(step_model_path, tmp_path)
    real_round = d.engine._round

    def fragile(readings: list[Any]) -> Any:
        if any(r.stream == "poison" for r in readings):
            raise FloatingPointError("a bug no input should reach")
        return real_round(readings)

    monkeypatch.setattr(d.engine, "_round", fragile)
    mids = [link.deliver(f"sensors/{s}", reading(T0)) for s in ("a", "poison", "b")]
    d.iteration(0.01)
    assert sorted(json.loads(s.payload)["stream"] for s in link.results()) == ["a", "b"]
    assert [m for m, _ in link.acked] == mids
    assert d.engine.stats.rejected["internal_error"] == 1
    link.deliver("sensors/a", reading(T0 + 1))
    d.iteration(0.01)
    assert len(link.results()) == 3


def test_a_result_that_cannot_be_encoded_loses_only_its_own_reading(
    step_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the engine stepped the batch (encoding one result) must not re-step the batch:
    the others keep their results (a retry rejected them all as `duplicate`), the failed reading is
    rejected `internal_error` under its stream id, and every reading is journaled and acked."""
    import edge_lstm.pipeline as pipeline_module

    d, link = make(step_model_path, tmp_path)
    real_encode = pipeline_module.encode  # type: ignore[attr-defined]

    def fragile(r: Any) -> bytes:
        if r.stream == "poison":
            raise FloatingPointError("a bug no input should reach")
        return real_encode(r)

    monkeypatch.setattr(pipeline_module, "encode", fragile)
    mids = [link.deliver(f"sensors/{s}", reading(T0)) for s in ("a", "poison", "b")]
    d.iteration(0.01)
    assert sorted(json.loads(s.payload)["stream"] for s in link.results()) == ["a", "b"]
    assert [m for m, _ in link.acked] == mids
    assert dict(d.engine.stats.rejected) == {"internal_error": 1}
    errors = [json.loads(s.payload) for s in link.sent if s.topic == "edge-lstm/errors"]
    assert [(e["stream"], e["reason"]) for e in errors] == [("poison", "internal_error")]
    assert d.engine.table.row("poison").steps == 1  # stepped once, not re-stepped


_topics = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(["edge-lstm/status", "homeassistant/sensor/x/config", "a/+/b", "#", "ops/me", "", "$SYS/x"]),
)
_payloads = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda op, stream, extra: json.dumps({"op": op, "stream": stream, **extra}).encode(),
        st.sampled_from(["reset", "inspect", "checkpoint", "reload", "x", None]),
        st.one_of(st.none(), st.text(max_size=20), st.integers()),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_payloads, response_topic=_topics, correlation=st.one_of(st.none(), st.binary(max_size=10)))
def test_any_command_is_acked_and_never_written_to_a_daemon_topic(
    step_model_path: Path, tmp_path: Path, payload: bytes, response_topic: str | None, correlation: bytes | None
) -> None:
    d, link = _shared(step_model_path, tmp_path)
    before = len(link.sent)
    mid = link.deliver("edge-lstm/command", payload, response_topic=response_topic, correlation=correlation)
    d.iteration(0.01)
    assert mid in {m for m, _ in link.acked}
    for s in by_commands(link.sent[before:]):
        assert s.topic == REPLY or s.topic == response_topic
        assert not s.retain
        assert d.control.response_topic_problem(s.topic) is None or s.topic == REPLY


_DAEMONS: dict[str, tuple[Daemon, Any]] = {}


def _shared(step_model_path: Path, tmp_path: Path) -> tuple[Daemon, Any]:
    """One daemon for every hypothesis example (starting one per example would take minutes)."""
    key = str(step_model_path)
    if key not in _DAEMONS:
        _DAEMONS[key] = make(step_model_path, tmp_path)
    return _DAEMONS[key]
