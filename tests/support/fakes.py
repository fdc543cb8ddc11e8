"""Test doubles for the daemon's ports (edge_lstm/ports.py): a link without a broker, a clock that only
moves when told to. The daemon runs on them unchanged: `Daemon(settings, model, link_factory=...,
clock=...)`."""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from edge_lstm.ports import WAKE, Bell, Inbound
from edge_lstm.service.config import MqttSettings


class FakeClock:
    """`monotonic()` starts at 1000 and moves only with `advance`/`sleep`; `time()` is epoch-aligned."""

    def __init__(self, start: float = 1000.0, epoch: float = 1_764_000_000.0) -> None:
        self.t = start
        self.epoch = epoch - start

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return self.epoch + self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Sent:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    done: bool = False
    correlation: bytes | None = None


@dataclass
class FakeLink:
    """A `Link` that records what the daemon publishes and acks; the test decides when the "broker"
    has taken a publish (`complete`), connects, disconnects and delivers messages."""

    cfg: MqttSettings
    inbox: queue.SimpleQueue[Any]
    subscription: str | Sequence[str]  # as given; `subscriptions`: every filter, the readings' first
    max_queue: int
    auto_complete: bool = True  # publishes are handed over at once
    connected: bool = False
    subscribed: bool = False
    generation: int = 0
    session_present: bool = False  # as a clean start: the broker kept nothing
    connects: int = 0
    holds: int = 0
    held_s: float = 0.0
    max_inbox: int = 0
    publish_failures: int = 0
    intake_paused: bool = False
    doorbell: Bell | None = None  # none: the worker polls the inbox in slices, on the fake clock
    read_on: bool = False
    accepting: bool = True
    closed: bool = False
    kicks: int = 0
    wakes_taken: int = 0
    sent: list[Sent] = field(default_factory=list)
    acked: list[tuple[int, int]] = field(default_factory=list)
    _mid: int = 0
    subscriptions: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        subs = (self.subscription,) if isinstance(self.subscription, str) else tuple(self.subscription)
        if not subs:
            raise ValueError("FakeLink needs at least one subscription")
        self.subscriptions = tuple(dict.fromkeys(subs))

    # -- the Link protocol ----------------------------------------------------------------------
    def start(self) -> None:
        self.connect()

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool = False, correlation: bytes | None = None
    ) -> Sent:
        s = Sent(topic, payload, qos, retain, done=self.auto_complete, correlation=correlation)
        self.sent.append(s)
        return s

    def handed_over(self, handle: Sent) -> bool:
        return handle.done

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append((mid, qos))

    def woken(self) -> None:
        self.wakes_taken += 1

    def batch(self) -> AbstractContextManager[None]:
        return nullcontext()

    def kick(self, min_age_s: float = 5.0) -> int:
        self.kicks += 1
        return 0

    def stop_accepting(self) -> None:
        self.accepting = False

    def close(self, timeout: float = 5.0) -> bool:
        self.closed = True
        return self.connected

    # -- test controls --------------------------------------------------------------------------
    def connect(self) -> None:
        self.generation += 1
        self.connects += 1
        self.connected = self.subscribed = True
        self.inbox.put(WAKE)

    def disconnect(self) -> None:
        self.connected = self.subscribed = False

    def deliver(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        arrival: float | None = None,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> int:
        """A message from the broker, as the network thread would append it; returns its mid."""
        self._mid += 1
        arrived = time.time() if arrival is None else arrival
        m = Inbound(topic.encode(), payload, self._mid, qos, arrived, self.generation, response_topic, correlation)
        self.inbox.put(m)
        return self._mid

    def complete(self, *which: Sent) -> None:
        """The broker took these publishes (all of them when none are named)."""
        for s in which or tuple(self.sent):
            s.done = True

    def results(self, prefix: str = "edge-lstm/scores/") -> list[Sent]:
        return [s for s in self.sent if s.topic.startswith(prefix)]


class LinkFactory:
    """`link_factory=` for the daemon; the link it made is `.link`."""

    def __init__(self, *, auto_complete: bool = True) -> None:
        self.auto_complete = auto_complete
        self.link: FakeLink | None = None

    def __call__(
        self, cfg: MqttSettings, inbox: queue.SimpleQueue[Any], subscription: str | Sequence[str], max_queue: int
    ) -> FakeLink:
        self.link = FakeLink(cfg, inbox, subscription, max_queue, auto_complete=self.auto_complete)
        return self.link


class FakeNotifier:
    """Records what the daemon tells systemd."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def ready(self, status: str = "") -> bool:
        self.sent.append("READY=1")
        return True

    def status(self, status: str) -> bool:
        self.sent.append(f"STATUS={status}")
        return True

    def stopping(self, status: str = "") -> bool:
        self.sent.append("STOPPING=1")
        return True

    def watchdog(self, now: float | None = None) -> bool:
        return False

    def close(self) -> None:
        pass
