"""`[metrics]`: Prometheus /metrics (service/metrics.py; the `metrics` extra). Off unless a port is set."""

from __future__ import annotations

from pydantic import Field

from .base import Section

__all__ = ["MetricsSettings"]


class MetricsSettings(Section):
    port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Prometheus `/metrics` on this TCP port (0 = off; the `metrics` extra: "
        "`pip install '.[metrics]'`): `edge_lstm_results_total`, `edge_lstm_rejected_total{reason}`, "
        "`edge_lstm_streams`, ...",
    )
    address: str = Field(
        default="127.0.0.1",
        description="where `/metrics` listens (`0.0.0.0` for a Prometheus on another host)",
    )
