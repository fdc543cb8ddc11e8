"""Repro for the "publish_stalled" stall: QoS 1 publishes from a second thread that never complete.

    .venv/bin/python scripts/repro_stall.py --runs 20 --messages 50000            # raw paho client
    .venv/bin/python scripts/repro_stall.py --runs 20 --messages 50000 --link     # through MqttLink

Each run starts a private mosquitto, connects a client configured like `MqttLink` (MQTT v5,
manual_ack, max_inflight 1000, network loop in paho's thread), publishes `--messages` QoS 1
messages from a separate thread (like the daemon's worker) and waits until every
`MQTTMessageInfo` reports `_published`. With `--echo` the client also subscribes to what it
publishes and acks every received message from the publishing thread (the daemon's traffic shape).
A run that does not complete within `--timeout` s while still connected is a stall; the script then
prints paho's bookkeeping (in-flight counter, message states) for the diagnosis.
"""

from __future__ import annotations

import argparse
import collections
import queue
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from edge_lstm.broker import PrivateBroker  # noqa: E402

STATE_NAMES = {int(v): k for k, v in vars(paho).items() if k.startswith("mqtt_ms_")}


def _raw_client(port: int, inflight: int, v5: bool, echo_q: queue.SimpleQueue | None) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"repro-{time.monotonic_ns()}",
                    protocol=paho.MQTTv5 if v5 else paho.MQTTv311, manual_ack=True,
                    **({} if v5 else {"clean_session": True}))
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    connected = threading.Event()

    def on_connect(cl, u, f, rc, p):
        if echo_q is not None:
            cl.subscribe("repro/#", qos=1)
        connected.set()

    def on_message(cl, u, m):
        echo_q.put((m.mid, m.qos))  # type: ignore[union-attr]

    c.on_connect = on_connect
    c.on_message = on_message
    kw = {}
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = 1000
        kw = {"clean_start": True, "properties": props}
    c.connect("127.0.0.1", port, keepalive=30, **kw)
    c.loop_start()
    if not connected.wait(10):
        raise SystemExit("no CONNACK")
    time.sleep(0.2)  # let SUBACK arrive
    return c


def one_run(args: argparse.Namespace, run: int) -> tuple[bool, float, str]:
    with PrivateBroker() as broker:
        echo_q: queue.SimpleQueue | None = queue.SimpleQueue() if args.echo else None
        link = None
        if args.link:
            from edge_lstm.config import MqttSettings
            from edge_lstm.mqtt import MqttLink

            inbox: queue.SimpleQueue = queue.SimpleQueue()
            cfg = MqttSettings(port=broker.port, client_id=f"repro-{time.monotonic_ns()}",
                               max_inflight=args.inflight, protocol="5" if args.v5 else "3.1.1")
            link = MqttLink(cfg, inbox, "repro/#" if args.echo else "nothing/here")
            link.start()
            if not link.wait_connected(10):
                raise SystemExit("link did not connect")
            client = link.client
            publish = link.publish
            if args.echo:
                echo_q = inbox
        else:
            client = _raw_client(broker.port, args.inflight, args.v5, echo_q)

            def publish(topic: str, payload: bytes, qos: int) -> paho.MQTTMessageInfo:
                return client.publish(topic, payload, qos=qos)

        infos: list[paho.MQTTMessageInfo] = []
        payload = b"x" * args.size

        def worker() -> None:
            outstanding: collections.deque = collections.deque()
            for i in range(args.messages):
                infos.append(publish(f"repro/{i % 100}", payload, 1))
                outstanding.append(infos[-1])
                if echo_q is not None:
                    while True:
                        try:
                            item = echo_q.get_nowait()
                        except queue.Empty:
                            break
                        if isinstance(item, tuple):
                            client.ack(*item)
                        elif hasattr(item, "mid"):
                            client.ack(item.mid, item.qos)
                # like the daemon: at most `window` results outstanding (backpressure via Receive Maximum)
                while args.window and len(outstanding) >= args.window:
                    while outstanding and outstanding[0]._published:
                        outstanding.popleft()
                    if len(outstanding) >= args.window:
                        time.sleep(0.0005)
                if link is not None and hasattr(link, "tick") and i % 256 == 0:
                    link.tick()

        t0 = time.perf_counter()
        th = threading.Thread(target=worker)
        th.start()
        th.join()
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if link is not None and hasattr(link, "tick"):
                link.tick()
            if all(i._published for i in infos):
                break
            if args.verbose:
                print(f"  t={time.monotonic() - deadline + args.timeout:5.1f} unconfirmed="
                      f"{sum(not i._published for i in infos)} out_packets={len(client._out_packet)} "
                      f"inflight={client._inflight_messages}", flush=True)
                time.sleep(0.5)
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        stuck = [i for i in infos if not i._published]
        detail = ""
        if stuck:
            with client._out_message_mutex:
                states = collections.Counter(STATE_NAMES.get(int(m.state), m.state)
                                             for m in client._out_messages.values())
                detail = (f"stuck={len(stuck)} connected={client.is_connected()} "
                          f"inflight_counter={client._inflight_messages} max={client._max_inflight_messages} "
                          f"out_messages={len(client._out_messages)} states={dict(states)} "
                          f"out_packets={len(client._out_packet)} first_stuck_mid={stuck[0].mid} "
                          f"rc={[int(s.rc) for s in stuck[:5]]}")
        if link is not None:
            link.close(timeout=2)
        else:
            client.disconnect()
            client.loop_stop()
        return not stuck, elapsed, detail


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--inflight", type=int, default=1000)
    ap.add_argument("--window", type=int, default=0, help="max unconfirmed publishes (0 = unbounded)")
    ap.add_argument("--size", type=int, default=60)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--v311", dest="v5", action="store_false")
    ap.add_argument("--echo", action="store_true", help="subscribe to own publishes, ack from the worker")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--link", action="store_true", help="go through edge_lstm.mqtt.MqttLink")
    args = ap.parse_args()
    bad = 0
    for r in range(args.runs):
        ok, elapsed, detail = one_run(args, r)
        bad += not ok
        print(f"run {r + 1:3d}: {'ok   ' if ok else 'STALL'} {args.messages / elapsed:8.0f} msg/s {detail}",
              flush=True)
    print(f"{bad}/{args.runs} runs stalled")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
