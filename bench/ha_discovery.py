"""Home Assistant discovery: what the per-component configs edge-lstm publishes cost, next to the
device-based form (one `<prefix>/device/<id>/config` with `cmps`, HA 2024.11+) built from the same
entities; what `homeassistant.state_interval_s` saves in HA state writes; and the worker's cost of HA
per reading, against the engine's own per reading in batches of 64, same run (docs/homeassistant.md).

    .venv/bin/python bench/ha_discovery.py [--streams 100]

Counts messages and bytes of the retained configs, as published; no broker needed.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edge_lstm.engine import Engine
from edge_lstm.onnx_model import load_model
from edge_lstm.reading import Reading
from edge_lstm.result import Result
from edge_lstm.service.config import load_settings
from edge_lstm.service.ha_bridge import HomeAssistantBridge
from edge_lstm.service.homeassistant import Discovery, object_id


def device_based(d: Discovery, stream: str, state_topic: str) -> bytes:
    """The same stream as one device-based config: shared keys once, each entity under `cmps`."""
    comps: dict[str, object] = {}
    device: object = None
    for topic, payload in d.stream_configs(stream, state_topic):
        doc = json.loads(payload)
        device = doc.pop("device")
        for shared in ("origin", "availability_topic", "payload_available", "payload_not_available"):
            doc.pop(shared)
        comps[doc["unique_id"]] = {"platform": topic.split("/")[1], **doc}
    cfg = {
        "device": device,
        "origin": {"name": "edge-lstm"},
        "availability_topic": d.status_topic,
        "components": comps,
    }
    return json.dumps(cfg, separators=(",", ":"), ensure_ascii=False).encode()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=100)
    args = p.parse_args()
    d = Discovery("homeassistant", "edge_lstm", "edge-lstm/status", "default-forecaster", model_version="1.0.0")
    streams = [f"pump-{i}" for i in range(args.streams)] + ["Halle 2.Pumpe ü"]
    per_msgs = per_bytes = dev_bytes = 0
    for s in streams:
        configs = d.stream_configs(s, f"edge-lstm/ha/{s}")
        per_msgs += len(configs)
        per_bytes += sum(len(t) + len(p) for t, p in configs)
        dev_bytes += len(f"homeassistant/device/edge_lstm_{object_id(s)}/config") + len(device_based(d, s, "x"))
    n = len(streams)
    print(f"{n} streams, 4 entities each (alarm, score, likelihood, deviation):")
    per, dev = f"{per_bytes / n:.0f} bytes/stream", f"{dev_bytes / n:.0f} bytes/stream"
    print(f"  per-component (all HA versions):  {per_msgs} messages, {per_bytes} bytes, {per}")
    print(f"  device-based (HA 2024.11+ only): {n} messages, {dev_bytes} bytes, {dev}")
    print(f"  device-based / per-component bytes: {dev_bytes / per_bytes:.2f}")
    print("HA state writes per stream and hour at 10 readings/s:")
    for interval in (0.0, 1.0, 10.0, 60.0):
        writes = 36_000 if interval == 0 else min(36_000, int(3600 / interval))
        print(f"  state_interval_s = {interval:>4g}: {writes:>6} (alarm changes on top)")
    per_reading_cost(args.streams)


def per_reading_cost(n_streams: int, rounds: int = 200) -> None:
    """Microseconds per reading: the engine (batches of 64) and the HA bridge on the same results."""
    model = load_model(None)
    engine = Engine(model, max_streams=n_streams)
    bridge = HomeAssistantBridge(load_settings(None, homeassistant={"enabled": True}), model.meta, n_streams)
    rng = np.random.default_rng(0)
    n_features = len(model.meta.features)
    readings = [
        Reading(f"s{i % n_streams}", 1e9 + i // n_streams, tuple(rng.normal(size=n_features)))
        for i in range(n_streams * rounds)
    ]
    results: list[Result] = []
    t = time.perf_counter()
    for j in range(0, len(readings), 64):
        results += [r for r in engine.process(readings[j : j + 64]) if isinstance(r, Result)]
    engine_s = time.perf_counter() - t
    for r in results[:n_streams]:  # announcements (once per stream) are not steady state
        bridge.on_result(r, 0.0)
    steady = results[n_streams:]
    t = time.perf_counter()
    sent = 0
    for i, r in enumerate(steady):  # 10 results per simulated second per stream
        now = i / (10 * n_streams)
        sent += len(bridge.on_result(r, now)) + len(bridge.due(now))
    ha_s = time.perf_counter() - t
    engine_s *= len(steady) / len(results)
    n = len(steady)
    print(f"worker cost per reading, steady state ({n} readings, {n_streams} streams at 10/s, interval 10 s):")
    print(f"  engine, batches of 64: {engine_s / n * 1e6:.1f} us;  HA bridge: {ha_s / n * 1e6:.2f} us")
    print(f"  HA / engine: {ha_s / engine_s:.3f};  HA publishes: {sent} ({sent / n:.1%} of readings)")


if __name__ == "__main__":
    main()
