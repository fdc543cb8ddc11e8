#!/usr/bin/env python3
"""Which hop holds a light load's results: subscribers of different kinds side by side (issue 22).

    python bench/mqtt_hops.py                              # 200 readings/s over 100 streams, 10 s
    python bench/mqtt_hops.py --broker-nodelay             # mosquitto with set_tcp_nodelay true
    python bench/mqtt_hops.py --tree base=/path/to/tree    # another source tree's daemon, in turn

One private mosquitto, one daemon at a time (default settings), bench/mqtt_load.py's raw publisher at
`--rate` over `--streams` streams, and five subscribers at once, each timing publish -> arrival:

- `results`: the results, as bench/footprint.py's collector takes them (QoS 0, never writes back);
- `results quickack`: the same, with TCP_QUICKACK set after every read (it ACKs at once);
- `results qos1`: the results at QoS 1, a PUBACK written back for each (as a QoS 1 client does);
- `readings` / `readings quickack`: the readings themselves (publisher -> broker -> subscriber).

If the three result subscribers agree, the subscriber's delayed ACK is not what holds results (the
broker -> subscriber hop is not Nagle-bound); if `readings` is fast, the publisher -> broker hop is not
either; what is left is the broker -> daemon -> broker path.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import mqtt_load  # noqa: E402
from mqtt_consumers import DaemonRun  # noqa: E402
from mqtt_session import drop_session, make_session  # noqa: E402
from mqtt_traffic import paced  # noqa: E402

from edge_lstm.demo.broker import PrivateBroker  # noqa: E402

OnBatch = Callable[[float, list[bytes]], None]


class Subscriber(mqtt_load.RawSubscriber):
    """A raw subscriber that optionally ACKs at once (`quickack`) or subscribes at QoS 1 and PUBACKs."""

    def __init__(self, port: int, topic: str, *, quickack: bool = False, qos: int = 0) -> None:
        self.quickack, self.qos = quickack, qos
        self.sock = mqtt_load._connect(port, f"hops-{id(self):x}")
        body = struct.pack("!H", 1) + mqtt_load.mqtt_str(topic) + bytes([qos])
        self.sock.sendall(bytes([mqtt_load.SUBSCRIBE << 4 | 2]) + mqtt_load.remaining_length(len(body)) + body)
        ack = b""
        while len(ack) < 5:
            ack += self.sock.recv(5 - len(ack))
        self.sock.settimeout(None)

    def run(self, on_batch: OnBatch) -> None:
        buf, sock = b"", self.sock
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            if self.quickack:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            now = time.time()
            buf = buf + data if buf else data
            packets, pos = mqtt_load.split_packets(buf)
            payloads, acks = [], bytearray()
            for first, start, end in packets:
                if first >> 4 != mqtt_load.PUBLISH:
                    continue
                tlen = (buf[start] << 8) | buf[start + 1]
                has_id = bool(first & 0x06)
                payloads.append(buf[start + 2 + tlen + (2 if has_id else 0) : end])
                if has_id:
                    acks += b"\x40\x02" + buf[start + 2 + tlen : start + 4 + tlen]
            buf = buf[pos:]
            if acks:
                sock.sendall(acks)
            if payloads:
                on_batch(now, payloads)


def measure(port: int, tmp: Path, name: str, src: Path, a: argparse.Namespace) -> dict[str, list[float]]:
    subs = {
        "results": Subscriber(port, "edge-lstm/scores/#"),
        "results quickack": Subscriber(port, "edge-lstm/scores/#", quickack=True),
        "results qos1": Subscriber(port, "edge-lstm/scores/#", qos=1),
        "readings": Subscriber(port, "sensors/+"),
        "readings quickack": Subscriber(port, "sensors/+", quickack=True),
    }
    lat: dict[str, list[float]] = {k: [] for k in subs}
    on = threading.Event()

    def collect(key: str) -> OnBatch:
        def on_batch(now: float, payloads: list[bytes]) -> None:
            if on.is_set():
                lat[key].extend(now - mqtt_load.result_ts(p) for p in payloads)

        return on_batch

    threads = [threading.Thread(target=s.run, args=(collect(k),), daemon=True) for k, s in subs.items()]
    for t in threads:
        t.start()
    d = DaemonRun(name, src, port, tmp)
    make_session(port, d.client_id)
    d.start()
    try:
        time.sleep(3.0)
        paced(port, a.rate, 2.0, [f"{name}-w{i}" for i in range(a.streams)])  # warm-up, not timed
        time.sleep(1.0)
        on.set()
        paced(port, a.rate, a.secs, [f"{name}-s{i}" for i in range(a.streams)])
        time.sleep(2.0)
        on.clear()
    finally:
        d.stop()
        drop_session(port, d.client_id)
        for s in subs.values():
            s.close()
    return lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--secs", type=float, default=10.0)
    ap.add_argument("--broker-nodelay", action="store_true", help="mosquitto's set_tcp_nodelay true (no Nagle)")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="another source tree")
    a = ap.parse_args()
    consumers = [("daemon", ROOT)] + [(n, Path(p).resolve()) for n, p in (x.split("=", 1) for x in a.tree)]
    extra = "max_inflight_messages 1000\n" + ("set_tcp_nodelay true\n" if a.broker_nodelay else "")
    print(f"{a.rate:g} readings/s over {a.streams} streams, {a.secs:g} s; broker set_tcp_nodelay {a.broker_nodelay}")
    print(f"{'daemon':<10} {'subscriber':<18} {'n':>6} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    with (
        tempfile.TemporaryDirectory(prefix="bench-hops-") as tmp,
        PrivateBroker(persistence=True, extra_conf=extra) as b,
    ):
        for name, src in consumers:
            for key, v in measure(b.port, Path(tmp), name, src, a).items():
                v.sort()
                n = len(v)
                if n:
                    p50, p90, p99 = statistics.median(v), v[int(n * 0.9)], v[min(n - 1, int(n * 0.99))]
                    cells = " ".join(f"{x * 1000:7.1f}" for x in (p50, p90, p99, v[-1]))
                    print(f"{name:<10} {key:<18} {n:6d} {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
