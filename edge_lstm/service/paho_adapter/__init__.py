"""The paho adapter: the one place in edge_lstm that reaches into paho-mqtt's internals.

The daemon needs more of paho than its public API gives (docs/architecture.md, "Where paho lives"):

* `client.BatchedClient`: a batch's publishes and acks as one write with one wake-up of the network
  thread, buffered reads, the stuck-window repair, TCP_NODELAY (`no_delay`);
* `fast.FastPackets`, its base: the per-packet paths for plain QoS 1 PUBLISH and PUBACK;
* `is_handed_over`, `settle_dropped_qos0`, `raw_topic`: the message state `service/mqtt.py` reads.
* `callbacks`: what `service/mqtt.py` reads from the flags, reason codes and properties paho passes
  its callbacks (public, but shaped by the protocol version).

They use private members (`_out_messages`, `_packet_queue`, `_in_packet`, `MQTTMessageInfo._published`,
...), which any paho release may change. So: they live here and nowhere else (`scripts/check_paho.py`,
run by `./dev check`, fails on a touch of paho's private members anywhere else in edge_lstm/), the
tests of this package run against the oldest and the newest paho 2.x the project allows (`./dev paho`,
run by CI), and `CHECKED_WITH` lists the paho versions they passed with. A new paho release: run
`./dev paho`, then add it here.
"""

from __future__ import annotations

from .client import BatchedClient, Repaired, is_handed_over, no_delay, raw_topic, settle_dropped_qos0

# paho-mqtt versions tests/unit/service/paho_adapter/test_paho_fast.py, tests/integration/test_paho_fast_path.py
# and the MQTT integration tests passed with (`./dev paho`). pyproject.toml allows >=2.1,<3.
CHECKED_WITH = ("2.1.0", "2.2.0")

__all__ = [
    "CHECKED_WITH",
    "BatchedClient",
    "Repaired",
    "is_handed_over",
    "no_delay",
    "raw_topic",
    "settle_dropped_qos0",
]
