"""Synthetic machines: correlated temperature / vibration / current, with injectable anomalies.

Used to train the packaged default model (normal data only) and by `edge-lstm demo` (a fleet with
anomalies). Deterministic for a given seed. NumPy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FEATURES: tuple[str, ...] = ("temperature", "vibration", "current")
ANOMALY_KINDS: tuple[str, ...] = ("spike", "overheat", "bearing", "stall")


@dataclass
class Anomaly:
    kind: str
    start: int  # step index at which it begins
    length: int  # steps it lasts


class Machine:
    """One sensor stream. A duty cycle drives the motor current; temperature follows the current with
    a thermal lag; vibration follows the load. Each machine has its own operating point."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.period = float(r.uniform(40.0, 90.0))  # duty cycle, steps
        self.phase = float(r.uniform(0, 2 * math.pi))
        self.base_load = float(r.uniform(0.4, 0.7))
        self.ambient = float(r.uniform(18.0, 26.0))
        self.t = 0
        self.drift = 0.0
        self.temp = self.ambient + 2.0 * self._current(self._load())
        self.anomaly: Anomaly | None = None

    def _load(self) -> float:
        cyc = math.sin(2 * math.pi * self.t / self.period + self.phase)
        return self.base_load + 0.25 * cyc + self.drift

    @staticmethod
    def _current(load: float) -> float:
        return 4.0 + 10.0 * load

    def inject(self, kind: str, length: int) -> Anomaly:
        if kind not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}; known: {ANOMALY_KINDS}")
        self.anomaly = Anomaly(kind, self.t, 1 if kind == "spike" else length)
        return self.anomaly

    def step(self) -> tuple[float, float, float]:
        r = self.rng
        self.drift = 0.98 * self.drift + r.normal(0.0, 0.004)  # slow wander of the load
        load = self._load()
        current = self._current(load) + r.normal(0.0, 0.08)
        temp_target = self.ambient + 2.0 * current
        vib = 0.2 + 0.5 * load + r.normal(0.0, 0.015)
        a = self.anomaly
        k = self.t - a.start if a is not None else -1
        if a is not None and 0 <= k < a.length:
            if a.kind == "spike":  # a transient: one reading far off on current
                current += 6.0
            elif a.kind == "overheat":  # cooling failure: temperature runs away from the current
                temp_target += 3.0 + 1.5 * k
            elif a.kind == "bearing":  # worn bearing: vibration level and noise jump
                vib += 0.3 + r.normal(0.0, 0.15)
            elif a.kind == "stall":  # the motor stalls: current surges, vibration drops
                current += 5.0
                vib *= 0.3
        elif a is not None and k >= a.length:
            self.anomaly = None
        self.temp += 0.15 * (temp_target - self.temp) + r.normal(0.0, 0.05)
        self.t += 1
        return (round(self.temp, 4), round(vib, 5), round(current, 4))


def normal_series(n_steps: int, seed: int) -> np.ndarray:
    """`n_steps` readings of normal operation of one machine, shape [n_steps, len(FEATURES)]."""
    m = Machine(seed)
    return np.asarray([m.step() for _ in range(n_steps)], dtype=np.float64)
