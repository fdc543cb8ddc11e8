"""Home Assistant, end to end (`[homeassistant] enabled`): what to publish, and in which order.

    a stream's first result ──▶ empty configs on the pre-0.x topics (once), its configs (retained),
                                then its first state (retained): configs always precede the state
    every later result       ──▶ its state, rate-limited (ha_states.StateThrottle)
    HA announces `online`    ──▶ every config again (HA forgot them); states are retained already
    a stream removed         ──▶ empty retained configs and state: HA deletes its device
    the broker lost its state ──▶ every config again, each stream's next state at once

The methods return what to publish; `tick`, called by the daemon's worker every cycle, publishes
through the link it is handed (service/control.py routes HA's status topic and the `remove` command
here, and publishes their answers).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace

from ..contract import ModelMeta
from ..engine import Engine
from ..ports import Link
from ..result import Result
from ..topics import TopicPattern
from .config import Settings
from .ha_states import HaState, StateThrottle, snapshot, stream_state
from .homeassistant import Discovery, object_id
from .logs import get_logger

Publish = tuple[str, bytes, bool]  # topic, payload, retain


class HomeAssistantBridge:
    def __init__(self, settings: Settings, meta: ModelMeta, max_streams: int) -> None:
        ha, mq = settings.homeassistant, settings.mqtt
        self.discovery = Discovery(
            ha.discovery_prefix,
            ha.node_id,
            mq.status_topic,
            meta.name,
            model_version=meta.version,
            expire_after_s=ha.expire_after_s,
            legacy_node=object_id(mq.client_id),
        )
        self.stats_topic = mq.stats_topic
        self.qos = mq.qos_out
        self.remove_on_evict = ha.remove_on_evict
        self.max_streams = max_streams
        self.states: StateThrottle[HaState] = StateThrottle(ha.state_interval_s, max_streams)
        self._state_topic = TopicPattern(ha.state_pattern)
        # Streams announced since start / since HA last came online; bounded like the state table.
        self._announced: OrderedDict[str, None] = OrderedDict()
        self._migrated: OrderedDict[str, None] = OrderedDict()  # legacy configs cleared this run
        self.removed = 0
        self.failures = 0  # bugs contained: Home Assistant is best effort, scoring must never stop for it
        self.log = get_logger("edge_lstm.homeassistant")
        self.generation: int | None = None  # the link connection the configs were last checked on

    def state_topic(self, stream: str) -> str:
        return self._state_topic.topic_for(stream)

    def startup(self) -> list[Publish]:
        """The daemon device's configs."""
        return [(t, p, True) for t, p in self.discovery.daemon_configs(self.stats_topic)]

    def tick(
        self, now: float, link: Link, engine: Engine, idle_evicted: list[str], log_stats: Callable[[float], None]
    ) -> None:
        """The worker's cycle: configs on a new connection (then the stats the daemon's device reads, at
        once), held-back states that are due, idle-evicted streams removed. Best effort: no reading waits,
        and whatever it raises is logged and counted, never stops the worker (a restart loop under systemd)."""
        try:
            self._tick(now, link, engine, idle_evicted, log_stats)
        except Exception as e:  # noqa: BLE001 - see the docstring
            self._failed("tick", e)

    def _failed(self, what: str, e: Exception) -> None:
        self.failures += 1
        self.log.error("homeassistant_failed", step=what, error=f"{type(e).__name__}: {e}"[:300])

    def _tick(
        self, now: float, link: Link, engine: Engine, idle_evicted: list[str], log_stats: Callable[[float], None]
    ) -> None:
        out: list[Publish] = []
        if link.connected and link.generation != self.generation:
            out += self.on_connected(link.generation, link.session_present, engine)
            log_stats(now)
        out += self.due(now) + self.evicted(idle_evicted)
        for topic, payload, retain in out:
            link.publish(topic, payload, self.qos, retain)

    def on_connected(self, generation: int, session_present: bool, engine: Engine) -> list[Publish]:
        """A new connection. The first: the daemon's configs (each stream announces itself with its first
        result). A later one without the broker's session: the broker lost its state (restarted without
        persistence), retained configs and states included: announce everything again, and let each
        stream's next state go at once."""
        first, self.generation = self.generation is None, generation
        if first:
            return self.startup()
        if session_present:
            return []
        self.states.release()
        return self.on_online(list(engine.table.slots))

    def on_result(self, r: Result, now: float) -> list[Publish]:
        """For one result: its stream's configs if not announced yet, then its state if due now (nothing,
        logged and counted, if that raises: the result itself is published all the same)."""
        try:
            return self._on_result(r, now)
        except Exception as e:  # noqa: BLE001 - a bug in the HA bridge must not stop scoring
            self._failed("result", e)
            return []

    def _on_result(self, r: Result, now: float) -> list[Publish]:
        out = self._announce(r.stream) if r.stream not in self._announced else []
        state = snapshot(r)
        if self.states.offer(r.stream, r.alarm, state, now):
            out.append((self.state_topic(r.stream), stream_state(state), True))
        return out

    def accepted(self, stream: str) -> list[Publish]:
        """After `accept` cleared a stream's alarm: its latest state with the alarm off, at once (else Home
        Assistant shows the alarm on until the stream's next reading). Nothing if HA never saw the stream."""
        try:
            last = self.states.latest(stream)
            if last is None:
                return []
            score, likelihood, deviation, _, warming_up, ts = last
            state: HaState = (score, likelihood, deviation, False, warming_up, ts)
            self.states.replace(stream, False, state)
            return [(self.state_topic(stream), stream_state(state), True)]
        except Exception as e:  # noqa: BLE001 - a bug in the HA bridge must not fail the command
            self._failed("accept", e)
            return []

    def due(self, now: float) -> list[Publish]:
        """States held back by the rate limit whose interval has passed."""
        return [(self.state_topic(s), stream_state(r), True) for s, r in self.states.due(now)]

    def on_online(self, live_streams: Iterable[str]) -> list[Publish]:
        """Home Assistant (re)started: it forgot every config; announce the daemon and live streams."""
        self._announced.clear()
        out = self.startup()
        for s in live_streams:
            out += self._announce(s)
        return out

    def model_changed(self, meta: ModelMeta) -> None:
        """A reload served another model in place: each stream announces itself again (its device shows
        the model's name and version) with its next result."""
        self.discovery = replace(self.discovery, model=meta.name, model_version=meta.version)
        self._announced.clear()

    def remove(self, stream: str) -> list[Publish]:
        """Empty retained configs and state for `stream`: Home Assistant deletes its entities and device."""
        self._announced.pop(stream, None)
        self.states.forget(stream)
        self.removed += 1
        out = [(t, p, True) for t, p in self.discovery.stream_removal(stream)]
        out.append((self.state_topic(stream), b"", True))
        return out

    def evicted(self, streams: Iterable[str]) -> list[Publish]:
        """Streams evicted as idle: removed from Home Assistant if `remove_on_evict` is set."""
        if not self.remove_on_evict:
            return []
        return [pub for s in streams for pub in self.remove(s)]

    def _announce(self, stream: str) -> list[Publish]:
        out: list[Publish] = []
        if stream not in self._migrated:
            _remember(self._migrated, stream, self.max_streams)
            out += [(t, p, True) for t, p in self.discovery.legacy_removal(stream)]
        _remember(self._announced, stream, self.max_streams)
        out += [(t, p, True) for t, p in self.discovery.stream_configs(stream, self.state_topic(stream))]
        return out


def _remember(seen: OrderedDict[str, None], stream: str, bound: int) -> None:
    seen[stream] = None
    if len(seen) > bound:
        seen.popitem(last=False)
