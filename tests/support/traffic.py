"""Synthetic readings for engine-level and fault tests, and the JSON payload of one reading."""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from edge_lstm import Reading

T0 = 1_700_000_000.0


def traffic(n_streams: int, n_steps: int, seed: int = 0) -> list[Reading]:
    """`n_steps` rounds of one reading per stream (3 features), streams taking turns, ts = T0 + step."""
    rng = np.random.default_rng(seed)
    return [
        Reading(f"s{s}", T0 + t, tuple(rng.normal(size=3).round(6).tolist()))
        for t in range(n_steps)
        for s in range(n_streams)
    ]


def make_traffic(n_streams: int, n_steps: int, t0: float, seed: int) -> list[Reading]:
    """Readings in publication order: step by step, every stream once per step, explicit event times."""
    rng = np.random.default_rng(seed)
    return [
        Reading(f"s{k:03d}", t0 + t, tuple(rng.normal(size=3).round(5).tolist()))
        for t in range(n_steps)
        for k in range(n_streams)
    ]


def reading_payload(ts: object, values: Iterable[object] | None = None, **features: object) -> bytes:
    """The JSON payload of one reading as a sensor publishes it: `{"ts": ts, "values": [...]}`, or one
    field per feature (`reading_payload(ts, a=1, b=2, c=3)`), or both. `ts` and the values are written
    as given (a string ts, a list of the wrong length: payloads the daemon must reject)."""
    doc: dict[str, object] = {"ts": ts}
    if values is not None:
        doc["values"] = list(values)
    doc.update(features)
    return json.dumps(doc).encode()
