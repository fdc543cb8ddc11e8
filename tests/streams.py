"""Synthetic reading traffic for engine-level tests (no broker)."""

from __future__ import annotations

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
