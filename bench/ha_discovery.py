"""Home Assistant discovery: what the per-component configs edge-lstm publishes cost, next to the
device-based form (one `<prefix>/device/<id>/config` with `cmps`, HA 2024.11+) built from the same
entities; and what `homeassistant.state_interval_s` saves in HA state writes (docs/homeassistant.md).

    .venv/bin/python bench/ha_discovery.py [--streams 100]

Counts messages and bytes of the retained configs, as published; no broker needed.
"""

from __future__ import annotations

import argparse
import json

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


if __name__ == "__main__":
    main()
