"""Shared fixtures: the test model, a private mosquitto, the daemon as a subprocess, MQTT clients.

The helper code is in tests/support/ (importable as `support`: pytest's `pythonpath = ["tests"]`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.daemon import DaemonProcess
from support.models import make_step_model
from support.mqtt import Collector, Publisher


@pytest.fixture(scope="session")
def step_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-feature (a, b, c) forecast LSTM step model with calibration, warmup_steps=2."""
    return make_step_model(tmp_path_factory.mktemp("models") / "test-model.onnx")


@pytest.fixture
def mosquitto_binary() -> str:
    """The mosquitto binary (skips without one): for scripts that start their own broker (bench/)."""
    from edge_lstm.demo.broker import BrokerUnavailable, find_mosquitto

    try:
        return find_mosquitto()
    except BrokerUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def broker() -> Iterator[Any]:
    """A started private mosquitto on a free port (persistence on, like docs/mosquitto.conf)."""
    from edge_lstm.demo.broker import BrokerUnavailable, PrivateBroker

    try:
        b = PrivateBroker(persistence=True).start()
    except BrokerUnavailable as e:
        pytest.skip(str(e))
    try:
        yield b
    finally:
        b.stop()
        if b._tmp is not None:
            b._tmp.cleanup()


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """`run_daemon(config_dict, env=None, config_text=None)` → a started DaemonProcess with that config
    file (in tmp_path), killed at teardown."""
    started: list[DaemonProcess] = []

    def start(
        config: dict[str, Any] | None = None, env: dict[str, str] | None = None, config_text: str | None = None
    ) -> DaemonProcess:
        d = DaemonProcess(tmp_path, config or {}, config_text=config_text, env=env)
        started.append(d)
        return d.start()

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def collector() -> Iterator[Callable[..., Collector]]:
    """`collector(port, topics)` → a subscribed Collector (closed at teardown)."""
    made: list[Collector] = []

    def make(port: int, topics: list[str]) -> Collector:
        c = Collector(port, topics)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def publisher() -> Iterator[Callable[[int], Publisher]]:
    """`publisher(port)` → a connected Publisher (flushed and closed at teardown)."""
    made: list[Publisher] = []

    def make(port: int) -> Publisher:
        p = Publisher(port)
        made.append(p)
        return p

    yield make
    for p in made:
        try:
            p.close()
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
