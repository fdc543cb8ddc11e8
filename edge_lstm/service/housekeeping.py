"""The worker's periodic chores, each on its own timer, all run from the worker loop (no threads):
idle-stream eviction, rate-limited rejection logs, backpressure and stall warnings, re-sending results
paho left unsent, and the stats line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engine import Engine
from ..ports import Clock, Inbox, Link
from .acks import AckLedger
from .config import Settings
from .logs import RateLimitedLog


class Housekeeping:
    stall_warn_s = 30.0  # warn when the oldest unacked reading's result is not handed over for this long
    kick_every_s = 5.0  # how often unsent results are looked for while connected
    backpressure_log_every_s = 10.0

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        link: Link,
        ledger: AckLedger,
        inbox: Inbox[Any],
        reject_log: RateLimitedLog,
        log: Any,
        clock: Clock,
        log_stats: Callable[[float], None],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.link = link
        self.ledger = ledger
        self.inbox = inbox
        self.reject_log = reject_log
        self.log = log
        self.clock = clock
        self.log_stats = log_stats
        now = clock.monotonic()
        self.started, self.started_wall = now, clock.time()
        self.last_stats = now
        self.last_idle_check = now
        self.last_ack_progress = now
        self._bp_logged = 0.0
        self._holds_logged = 0
        self._stall_logged = 0.0
        self._last_kick = 0.0
        self._idle_evicted: list[str] = []  # streams evicted as idle, until taken (Home Assistant removal)
        self.stalls = 0

    def acks_flowing(self) -> bool:
        """Pausing intake for PUBACKs helps only while they arrive: if none came for a second, the network
        thread is probably holding (backpressure) and reads no PUBACK until the worker drains the inbox."""
        return self.clock.monotonic() - self.last_ack_progress < 1.0

    def take_idle_evicted(self) -> list[str]:
        """The streams evicted as idle since the last call."""
        out, self._idle_evicted = self._idle_evicted, []
        return out

    def acked(self, now: float) -> None:
        """Acknowledgements made progress (a stall is no progress, not a long backlog)."""
        self.last_ack_progress = now

    def run(self, now: float) -> None:
        s = self.settings
        idle_timeout = s.engine.idle_timeout_s
        if idle_timeout and now - self.last_idle_check > min(10.0, idle_timeout):
            self.last_idle_check = now
            # The cutoff moves with the monotonic clock from the wall time at start: a wall-clock step
            # (NTP's first sync on a Pi without an RTC jumps days) must not evict every stream at once.
            evicted = self.engine.evict_idle(self.started_wall + (now - self.started) - idle_timeout)
            if s.homeassistant.enabled and s.homeassistant.remove_on_evict:  # taken by ha_bridge.tick
                self._idle_evicted += [r.stream for r in evicted]
        self.reject_log.flush()
        self._backpressure(now)
        if self.ledger and self.link.connected:
            self._unsent(now)
        if s.log.stats_interval_s and now - self.last_stats >= s.log.stats_interval_s:
            self.log_stats(now)
            self.last_stats = now

    def _backpressure(self, now: float) -> None:
        holds = self.link.holds
        if holds > self._holds_logged and now - self._bp_logged > self.backpressure_log_every_s:
            self._bp_logged, self._holds_logged = now, holds
            self.log.warning(
                "backpressure",
                holds=holds,
                held_s=round(self.link.held_s, 1),
                max_queue=self.settings.engine.max_queue,
                queue=self.inbox.qsize(),
                detail="the worker is behind: reading from the broker paused until it catches up",
            )

    def _unsent(self, now: float) -> None:
        if now - self._last_kick >= self.kick_every_s:
            # Re-send results paho left unsent while connected (mqtt.py, MqttLink.kick).
            self._last_kick = now
            self.link.kick(min_age_s=self.kick_every_s)
        oldest = self.ledger.oldest_t()
        idle = now - max(oldest if oldest is not None else now, self.last_ack_progress)
        if idle > self.stall_warn_s and now - self._stall_logged > self.stall_warn_s:
            self._stall_logged = now
            self.stalls += 1
            self.log.warning(
                "publish_stalled",
                unacked=len(self.ledger),
                no_progress_s=round(idle, 1),
                detail="results are not being acknowledged by the broker while connected",
            )
