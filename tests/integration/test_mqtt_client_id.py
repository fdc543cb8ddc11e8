"""Two links with one client id take each other's session: detected, logged once, backed off (issue 8)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Literal

import pytest
import structlog

from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.service.config import MqttSettings
from edge_lstm.service.mqtt import MqttLink


def _wait(pred: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_links_with_one_client_id_back_off_instead_of_ping_ponging(
    broker: PrivateBroker, protocol: Literal["5", "3.1.1"]
) -> None:
    cfg = MqttSettings(port=broker.port, client_id=f"same-id-{protocol}", protocol=protocol)
    links = [MqttLink(cfg, queue.SimpleQueue(), "sensors/+") for _ in range(2)]
    with structlog.testing.capture_logs() as logs:
        try:
            for link in links:
                link.start()
            # Without detection they would take the session from each other every second, forever.
            assert _wait(lambda: any(link.conflict for link in links), timeout=15)
            before = sum(link.connects for link in links)
            time.sleep(5)
            after = sum(link.connects for link in links)
            # Backed off: the link that saw the conflict waits reconnect_max_delay_s (30 s) before its
            # next attempt, so the other one keeps the session (was ~5 connects in 5 s).
            assert after - before <= 1, (before, after)
            assert any(link.connected for link in links)
        finally:
            for link in links:
                link.close(timeout=2)
    conflicts = [e for e in logs if e["event"] == "client_id_conflict"]
    assert 1 <= len(conflicts) <= 2  # at most once per link
    assert all(e["client_id"] == cfg.client_id and e["log_level"] == "warning" for e in conflicts)
    assert sum(link.client_id_conflicts for link in links) >= 1


@pytest.mark.integration
def test_one_link_per_client_id_sees_no_conflict(broker: PrivateBroker) -> None:
    links = [
        MqttLink(MqttSettings(port=broker.port, client_id=f"own-id-{i}"), queue.SimpleQueue(), "sensors/+")
        for i in range(2)
    ]
    try:
        for link in links:
            link.start()
        assert all(link.wait_connected(10) for link in links)
        time.sleep(2.5)
        assert [link.connects for link in links] == [1, 1]
        assert not any(link.conflict or link.client_id_conflicts for link in links)
    finally:
        for link in links:
            link.close(timeout=2)
