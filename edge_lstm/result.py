"""Result → JSON payload for `edge-lstm/scores/{stream}` (README, "MQTT topics and payloads")."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Result:
    stream: str
    ts: float
    score: float
    anomaly: bool
    threshold: float | None
    warming_up: bool
    model: dict[str, str]
    prediction: list[float] | None = None  # forecast models: next reading, feature units
    output: list[float] | None = None  # score models: the model's outputs as they are
    names: tuple[str, ...] = ()  # output column names (forecast: feature names)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "stream": self.stream,
            "ts": self.ts,
            "score": self.score,
            "anomaly": self.anomaly,
            "threshold": self.threshold,
            "warming_up": self.warming_up,
            "model": self.model,
        }
        if self.prediction is not None:
            d["prediction"] = dict(zip(self.names, self.prediction))
        if self.output is not None:
            d["output"] = dict(zip(self.names, self.output))
        return d


def encode(result: Result) -> bytes:
    return json.dumps(result.to_dict(), separators=(",", ":"), allow_nan=False).encode()
