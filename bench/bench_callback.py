#!/usr/bin/env python3
"""End-to-end MQTT throughput: the daemon (callbacks only hand over) vs work inside `on_message`.

    python bench/bench_callback.py [--readings 20000] [--streams 100] [--timeout 60] [--idle 5]

One private mosquitto (edge_lstm.demo.broker.PrivateBroker, its default config but with
`max_queued_messages 1000`, mosquitto's own default, instead of the 100000 PrivateBroker sets), and the
same QoS 1 workload twice, one consumer at a time:

- daemon: `edge_lstm.service.daemon.Daemon(settings).run(stop)` in a thread (packaged model, default settings,
  fresh client id): paho's callback appends to a queue; a worker decodes, steps micro-batches through
  the engine, publishes and acknowledges;
- naive:  a paho 2.x client (MQTT v5, QoS 1 subscription, persistent session with the daemon's
  Receive Maximum and outgoing in-flight window) whose `on_message` decodes with `edge_lstm.Decoder`,
  runs `Engine.process([reading])` and publishes the result (QoS 1) inside the callback.

Workload: a publisher bursts `--readings` JSON readings (`{"ts": ..., "<feature>": ...}`, ts increasing
per stream) round-robin over `--streams` streams to `sensors/<stream>` as fast as it can (QoS 1,
1000 in flight). A separate collector (MQTT v5, Receive Maximum 65535 so the broker never queues for
it) subscribes to `edge-lstm/scores/#` at QoS 1 and counts distinct results (stream, ts).

A mode ends when every reading has a result, `--timeout` s after the first publish, or when publishing
is over and no result arrived for `--idle` s (the rest will never come: dropped by the broker or stuck).
readings/s end to end = distinct results / (last result - first publish). Publisher and collector
are child processes (their own interpreter and GIL, as real clients elsewhere would be); only the
consumer under test runs in this process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_lstm import Decoder, Engine, Result, encode, load_model  # noqa: E402
from edge_lstm.demo.broker import PrivateBroker  # noqa: E402

# A later line wins in mosquitto's config parser (conf.c assigns config->max_queued_messages on each
# occurrence), so this appended line overrides PrivateBroker's `max_queued_messages 100000`.
BROKER_EXTRA_CONF = "max_queued_messages 1000"
RECEIVE_MAXIMUM = 1000  # the daemon's default mqtt.receive_maximum (and max_inflight), used for naive too
SESSION_EXPIRY_S = 86_400  # the daemon's default mqtt.session_expiry_s


def make_payloads(n: int, n_streams: int, features: tuple[str, ...]) -> list[tuple[str, bytes]]:
    import random

    rng = random.Random(0)
    steps = (n + n_streams - 1) // n_streams
    t0 = round(time.time()) - steps - 60  # in the past: within the decoder's max_future_s whatever the speed
    out = []
    for i in range(n):
        stream = f"machine-{i % n_streams:04d}"
        doc = {"ts": t0 + i // n_streams, **{f: round(rng.uniform(0.0, 50.0), 4) for f in features}}
        out.append((f"sensors/{stream}", json.dumps(doc).encode()))
    return out


def v5_connect_props(receive_maximum: int, session_expiry: int) -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = session_expiry
    p.ReceiveMaximum = receive_maximum
    return p


def drop_session(port: int, client_id: str) -> None:
    """Remove a persistent session left on the broker (clean start, expiry 0), so it queues nothing more."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    try:
        c.connect("127.0.0.1", port, clean_start=True, properties=v5_connect_props(10, 0))
        c.loop_start()
        time.sleep(0.2)
        c.disconnect()
        c.loop_stop()
    except OSError:
        pass


def _collector_proc(port: int, client_id: str, count: Any, last: Any, subscribed: Any, stop: Any) -> None:
    """Child process: subscribed to edge-lstm/scores/# (QoS 1); counts distinct (stream, ts) results."""
    keys: set[tuple[str, float]] = set()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_connect = lambda c, u, f, rc, p: c.subscribe("edge-lstm/scores/#", qos=1)
    c.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        d = json.loads(msg.payload)
        keys.add((d["stream"], d["ts"]))
        count.value = len(keys)
        last.value = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on Linux

    c.on_message = on_message
    c.connect("127.0.0.1", port, clean_start=True, properties=v5_connect_props(65535, 0))
    c.loop_start()
    stop.wait()
    c.disconnect()
    c.loop_stop()


class Collector:
    """A separate process (its own GIL, like a real subscriber elsewhere) counting distinct results."""

    def __init__(self, port: int) -> None:
        ctx = mp.get_context("spawn")
        self.count = ctx.Value("q", 0, lock=False)
        self.last_v = ctx.Value("d", 0.0, lock=False)
        self._stop = ctx.Event()
        subscribed = ctx.Event()
        self.client_id = f"bench-collector-{uuid.uuid4().hex[:8]}"
        self.proc = ctx.Process(
            target=_collector_proc,
            daemon=True,
            args=(port, self.client_id, self.count, self.last_v, subscribed, self._stop),
        )
        self.proc.start()
        if not subscribed.wait(30):
            raise RuntimeError("collector did not subscribe")

    def distinct(self) -> int:
        return int(self.count.value)

    @property
    def last(self) -> float:
        return float(self.last_v.value)

    def close(self) -> None:
        self._stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def _publisher_proc(port: int, payloads: list[tuple[str, bytes]], ready: Any, go: Any, times: Any) -> None:
    """Child process: connect, wait for `go`, burst every payload at QoS 1 (1000 in flight), wait for
    the PUBACKs; times[0] = first publish, times[1] = last PUBACK (monotonic)."""
    acked = threading.Event()
    count = [0]
    n = len(payloads)
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)

    def on_publish(c: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
        count[0] += 1
        if count[0] >= n:
            acked.set()

    c.on_publish = on_publish
    c.on_connect = lambda *a: ready.set()
    c.connect("127.0.0.1", port, clean_start=True)
    c.loop_start()
    go.wait()
    times[0] = time.monotonic()
    for topic, payload in payloads:
        c.publish(topic, payload, qos=1)
    acked.wait(120)
    times[1] = time.monotonic()
    c.disconnect()
    c.loop_stop()


# ---- the two consumers -------------------------------------------------------------------------


class DaemonConsumer:
    name = "daemon"

    def __init__(self, port: int, state_dir: str) -> None:
        from edge_lstm.service.config import load_settings
        from edge_lstm.service.daemon import Daemon

        self.client_id = f"bench-daemon-{uuid.uuid4().hex[:8]}"
        settings = load_settings(
            None,
            state_dir=state_dir,
            mqtt={"host": "127.0.0.1", "port": port, "client_id": self.client_id},
            log={"level": "warning", "stats_interval_s": 0},
        )
        self.daemon = Daemon(settings)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.daemon.run, args=(self.stop_event,), daemon=True)
        self.thread.start()
        if not self.daemon.ready.wait(20):
            raise RuntimeError("daemon did not connect and subscribe within 20 s")

    def received(self) -> int:
        return int(self.daemon.stats()["received"])

    def processed(self) -> int:
        return int(self.daemon.stats()["results"])

    def model_calls(self) -> int:
        return int(self.daemon.stats()["model_calls"])

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


class NaiveConsumer:
    """Decode, step and publish inside paho's on_message (the network thread)."""

    name = "naive"

    def __init__(self, port: int, state_dir: str) -> None:
        model = load_model()
        self.decoder = Decoder(model.meta.features)
        self.engine = Engine(model)
        self.client_id = f"bench-naive-{uuid.uuid4().hex[:8]}"
        self.n_received = 0
        self.n_published = 0
        subscribed = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        c.max_inflight_messages_set(RECEIVE_MAXIMUM)
        c.on_connect = lambda c, u, f, rc, p: c.subscribe("sensors/+", qos=1)
        c.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            self.n_received += 1
            stream = msg.topic.split("/", 1)[1]
            out = self.engine.process([self.decoder.decode(stream, msg.payload, time.time())])[0]
            if isinstance(out, Result):
                c.publish(f"edge-lstm/scores/{stream}", encode(out), qos=1)
                self.n_published += 1

        c.on_message = on_message
        c.connect("127.0.0.1", port, clean_start=False, properties=v5_connect_props(RECEIVE_MAXIMUM, SESSION_EXPIRY_S))
        c.loop_start()
        self.client = c
        if not subscribed.wait(20):
            raise RuntimeError("naive consumer did not subscribe within 20 s")

    def received(self) -> int:
        return self.n_received

    def processed(self) -> int:
        return self.n_published

    def model_calls(self) -> int:
        return self.engine.stats.model_calls

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Outcome:
    name: str
    published: int = 0
    consumer_received: int = 0
    results: int = 0
    model_calls: int = 0
    seconds: float = 0.0
    publish_seconds: float = 0.0
    timed_out: bool = False
    broker_drop_notices: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.published - self.results

    @property
    def rate(self) -> float:
        return self.results / self.seconds if self.seconds > 0 else 0.0


def run_mode(
    factory: Callable[[int, str], Any],
    broker: PrivateBroker,
    payloads: list[tuple[str, bytes]],
    timeout: float,
    idle: float,
) -> Outcome:
    n = len(payloads)
    with tempfile.TemporaryDirectory(prefix="edge-lstm-bench-") as state_dir:
        consumer = factory(broker.port, state_dir)
        collector = Collector(broker.port)
        out = Outcome(consumer.name, published=n)
        ctx = mp.get_context("spawn")
        times = ctx.Array("d", [0.0, 0.0], lock=False)
        ready, go = ctx.Event(), ctx.Event()
        pt = ctx.Process(target=_publisher_proc, args=(broker.port, payloads, ready, go, times), daemon=True)
        pt.start()
        if not ready.wait(30):
            raise RuntimeError("publisher did not connect")
        t_start = time.monotonic()
        go.set()
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            if collector.distinct() >= n:
                break
            if now - t_start > timeout:
                out.timed_out = True
                break
            if not pt.is_alive() and now - max(collector.last, times[1]) > idle:
                break  # publishing over, nothing arrived for `idle` s
        pt.join(5)
        first = times[0] or t_start
        out.publish_seconds = (times[1] or time.monotonic()) - first
        out.seconds = ((time.monotonic() if out.timed_out else collector.last) - first) if collector.distinct() else 0.0
        out.results = collector.distinct()
        out.consumer_received = consumer.received()
        out.model_calls = consumer.model_calls()
        consumer.close()
        collector.close()
        drop_session(broker.port, consumer.client_id)
        log = broker.log.read_text(errors="replace") if broker.log.exists() else ""
        out.broker_drop_notices = [
            ln.strip() for ln in log.splitlines() if "dropped" in ln and consumer.client_id in ln
        ]
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readings", type=int, default=20_000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=60.0, help="per mode, from the first publish (s)")
    ap.add_argument(
        "--idle", type=float, default=5.0, help="end a mode this long after the last result once publishing is over (s)"
    )
    args = ap.parse_args(argv)

    for k in [k for k in os.environ if k.startswith("EDGE_LSTM_")]:
        del os.environ[k]  # the daemon's defaults, not whatever the shell has configured
    from edge_lstm.service.logs import configure

    configure(level="warning", fmt="console", stream=sys.stderr)

    features = tuple(load_model().meta.features)
    payloads = make_payloads(args.readings, args.streams, features)
    print(
        f"workload: {args.readings:,} QoS 1 readings over {args.streams} streams, features {list(features)}; "
        f"broker: mosquitto with `{BROKER_EXTRA_CONF}`",
        flush=True,
    )

    outcomes = []
    with PrivateBroker(extra_conf=BROKER_EXTRA_CONF) as broker:
        for factory in (DaemonConsumer, NaiveConsumer):
            o = run_mode(factory, broker, payloads, args.timeout, args.idle)
            outcomes.append(o)
            print(f"  {o.name}: done ({o.results:,}/{o.published:,} results)", flush=True)

    print()
    hdr = (
        f"{'mode':<8} {'published':>10} {'consumer in':>12} {'results':>9} {'no result':>10} "
        f"{'model calls':>11} {'seconds':>8} {'readings/s':>11} {'pub s':>6}  broker dropped for consumer"
    )
    print(hdr)
    for o in outcomes:
        drops = "yes" if o.broker_drop_notices else "no"
        print(
            f"{o.name:<8} {o.published:>10,} {o.consumer_received:>12,} {o.results:>9,} {o.missing:>10,} "
            f"{o.model_calls:>11,} {o.seconds:>8.2f} {o.rate:>11,.0f} {o.publish_seconds:>6.2f}  {drops}"
            + ("  (timed out)" if o.timed_out else "")
        )
    print(
        "(consumer in: readings the consumer's callback got; no result: published - distinct results, i.e.\n"
        " dropped by the broker's per-client queue or not processed before the end; seconds: first publish\n"
        " -> last result; pub s: first publish -> last PUBACK to the publisher)"
    )
    d, nv = outcomes
    ratio = d.rate / nv.rate if nv.rate > 0 else float("inf")
    print(f"\nratio (daemon / naive, end-to-end readings/s): {ratio:.2f}x")
    for o in outcomes:
        for line in o.broker_drop_notices:
            print(f"mosquitto ({o.name}): {re.sub(r'^[0-9]+: ', '', line)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
