"""Prometheus `/metrics` (opt-in: `[metrics] port`, the `metrics` extra: prometheus-client).

The values are read from the daemon's own counters (`stats.collect`) at each scrape, by a custom
collector in prometheus-client's HTTP thread: nothing is added to the per-reading path. Names follow
Prometheus conventions: `edge_lstm_<what>_total` for counters, plain names for gauges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

COUNTERS = {
    "received": "MQTT messages received",
    "readings": "readings decoded and stepped or rejected by the engine",
    "results": "results published",
    "anomalies": "readings flagged as anomalous",
    "alarms_raised": "alarms raised",
    "acked": "readings acknowledged to the broker",
    "evicted": "streams evicted from the state table",
    "model_calls": "model (onnxruntime) calls",
    "stalls": "publish stalls warned about",
    "publish_refused": "results the broker refused",
    "reconnects": "reconnections to the broker",
    "commands": "commands received",
    "command_errors": "commands refused or failed (bad JSON, refused Response Topic, an internal error)",
    "unjournaled": "readings acknowledged while the state directory refused writes",
    "spill_dropped_streams": "spilled streams dropped at spill.max_bytes (least recently seen first)",
    "spill_lost": "evicted streams' rows lost because the spill store could not write them",
}
GAUGES = {
    "streams": "streams in the state table",
    "streams_spilled": "stream versions in the spill store",
    "queue": "received readings waiting for the worker",
    "unacked": "readings waiting for their results to be handed over",
    "connected": "1 while connected to the broker",
    "mean_batch": "mean messages per worker batch",
    "durable": "1 while the state is durable (0: checkpoints off, or the state directory refuses writes)",
}


class DaemonCollector:
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.stats()
        for key, doc in COUNTERS.items():
            yield CounterMetricFamily(f"edge_lstm_{key}", doc, value=float(st.get(key, 0)))
        rejected = CounterMetricFamily("edge_lstm_rejected", "readings rejected, by reason", labels=["reason"])
        for reason, n in sorted(st.get("rejected", {}).items()):
            rejected.add_metric([reason], float(n))
        yield rejected
        for key, doc in GAUGES.items():
            yield GaugeMetricFamily(f"edge_lstm_{key}", doc, value=float(st.get(key, 0)))


def serve(port: int, address: str, stats: Callable[[], dict[str, Any]]) -> Any:
    """Start the HTTP endpoint (a daemon thread); returns prometheus-client's server."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        from .startup import setting_error

        raise setting_error("metrics.port", "needs the metrics extra: pip install 'edge-lstm[metrics]'") from None
    registry = CollectorRegistry()
    registry.register(DaemonCollector(stats))
    server, _ = start_http_server(port, addr=address, registry=registry)
    return server
