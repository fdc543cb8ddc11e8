"""The daemon's counters: the `stats` log line, the systemd STATUS and the retained stats topic."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    from .daemon import Daemon


def collect(d: Daemon) -> dict[str, Any]:
    st = d.engine.stats
    link = d._link  # noqa: SLF001 - None before start(): the stats say so
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
    }


class StatsReporter:
    def __init__(self, daemon: Daemon) -> None:
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
        topic, link = d.settings.mqtt.stats_topic, d._link  # noqa: SLF001
        if topic and link is not None and link.connected:
            # Retained, so a dashboard sees the latest at once; best effort (no reading waits for it).
            doc = {
                **st,
                "rate_per_s": round(rate, 1),
                "uptime_s": round(now - self.started, 1),
                "version": __version__,
                "model": d.model.meta.model_id,
            }
            link.publish(topic, json.dumps(doc, separators=(",", ":")).encode(), 0, True)
        d.notifier.status(
            f"{st['results']} results, {st['streams']} streams, {rate:.0f}/s, "
            f"{'connected' if st['connected'] else 'disconnected'}"
        )
