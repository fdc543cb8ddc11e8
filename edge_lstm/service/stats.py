"""The daemon's counters: the `stats` log line, the systemd STATUS and the retained stats topic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from .. import __version__
from ..engine import Engine
from ..pipeline import Pipeline
from ..ports import Clock, Inbox, Link, SpillStore, StateStore, StepModel
from .acks import AckLedger
from .config import Settings
from .control import Control
from .housekeeping import Housekeeping
from .logs import LAST_PROBLEM
from .notify import Notify


@dataclass
class Counters:
    received: int = 0
    published: int = 0
    acked: int = 0
    not_acked_old_connection: int = 0


class Observed(Protocol):
    """What the stats read from the daemon (`daemon.Daemon`), and nothing else: they change nothing in it."""

    @property
    def settings(self) -> Settings: ...
    @property
    def model(self) -> StepModel: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def control(self) -> Control: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def inbox(self) -> Inbox[Any]: ...
    @property
    def ledger(self) -> AckLedger: ...
    @property
    def started_link(self) -> Link | None:
        """None before the daemon started: the stats say so."""
        ...

    @property
    def housekeeping(self) -> Housekeeping | None: ...
    @property
    def spill(self) -> SpillStore | None: ...
    @property
    def durable(self) -> StateStore | None: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def log(self) -> Any: ...
    @property
    def notifier(self) -> Notify: ...


def collect(d: Observed) -> dict[str, Any]:
    st = d.engine.stats
    link = d.started_link  # None before start(): the stats say so
    return {
        "received": d.counters.received,
        "readings": st.readings,
        "results": st.results,
        "anomalies": st.anomalies,
        "rejected": dict(st.rejected),
        "streams": len(d.engine.table),
        "evicted": st.evicted,
        "queue": d.inbox.qsize(),
        "unacked": len(d.ledger),
        "acked": d.counters.acked,
        "backpressure_events": link.holds if link else 0,
        "max_queue_seen": link.max_inbox if link else 0,
        "max_outstanding": d.ledger.max_outstanding,
        "stalls": d.housekeeping.stalls if d.housekeeping else 0,
        "publish_refused": link.publish_failures if link else 0,
        "model_calls": st.model_calls,
        "connected": bool(link and link.connected),
        "reconnects": max(0, (link.connects if link else 0) - 1),
        "alarms_raised": st.alarms_raised,
        "streams_spilled": d.spill.rows if d.spill is not None else 0,
        "mean_batch": round(d.counters.received / d.pipeline.batches, 1) if d.pipeline.batches else 0.0,
        "commands": d.control.commands,
        "command_errors": d.control.command_errors,
        # False while the state directory cannot be written (a full disk): serving on, nothing journaled.
        "durable": bool(d.durable is not None and d.durable.durable),
        "unjournaled": d.durable.unjournaled if d.durable is not None else 0,
        "spill_dropped_streams": d.spill.dropped_streams if d.spill is not None else 0,
        "spill_lost": d.spill.lost if d.spill is not None else 0,
    }


def durable(st: dict[str, Any], d: Observed) -> bool:
    """Whether the streams' state survives a power cut: the stats' own `durable` flag when they have one
    (durable/ may turn it off when the disk fails), else whether durable state is on at all."""
    return bool(st.get("durable", d.durable is not None))


class StatsReporter:
    def __init__(self, daemon: Observed) -> None:
        self.d = daemon
        self.started = self.last_t = daemon.clock.monotonic()
        self.last_results = 0
        self.metrics_server: Any = None

    def serve_metrics(self) -> None:
        """Prometheus /metrics when `[metrics] port` is set (service/metrics.py)."""
        m = self.d.settings.metrics
        if m.port:
            from .metrics import serve

            self.metrics_server = serve(m.port, m.address, lambda: collect(self.d))
            self.d.log.info("metrics_serving", address=m.address, port=m.port)

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.shutdown()

    def report(self, now: float) -> None:
        d = self.d
        st = collect(d)
        rate = (st["results"] - self.last_results) / max(now - self.last_t, 1e-9)
        self.last_t, self.last_results = now, st["results"]
        d.log.info("stats", rate_per_s=round(rate, 1), **st)
        topic, link = d.settings.mqtt.stats_topic, d.started_link
        if topic and link is not None and link.connected:
            # Retained, so a dashboard sees the latest at once; best effort (no reading waits for it).
            doc = {
                **st,
                "rate_per_s": round(rate, 1),
                "uptime_s": round(now - self.started, 1),
                "version": __version__,
                "model": d.model.meta.model_id,
                "durable": durable(st, d),
                "last_error": LAST_PROBLEM.text or "none",
            }
            link.publish(topic, json.dumps(doc, separators=(",", ":")).encode(), 0, True)
        d.notifier.status(
            f"{st['results']} results, {st['streams']} streams, {rate:.0f}/s, "
            f"{'connected' if st['connected'] else 'disconnected'}"
            # `systemctl status` shows it: the state directory refuses writes (a full SD card).
            + ("" if st["durable"] or d.durable is None else ", NOT DURABLE (state directory full)")
        )
