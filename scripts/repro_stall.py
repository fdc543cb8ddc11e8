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

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_lstm.demo.broker import PrivateBroker

STATE_NAMES = {int(v): k for k, v in vars(paho).items() if k.startswith("mqtt_ms_")}


def _raw_client(port: int, inflight: int, v5: bool, echo_q: queue.SimpleQueue | None) -> paho.Client:
    c = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"repro-{time.monotonic_ns()}",
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        manual_ack=True,
        **({} if v5 else {"clean_session": True}),
    )
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
            from edge_lstm.service.config import MqttSettings
            from edge_lstm.service.mqtt import MqttLink

            inbox: queue.SimpleQueue = queue.SimpleQueue()
            cfg = MqttSettings(
                port=broker.port,
                client_id=f"repro-{time.monotonic_ns()}",
                max_inflight=args.inflight,
                protocol="5" if args.v5 else "3.1.1",
            )
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
                if link is not None and hasattr(link, "kick") and i % 256 == 0:
                    link.kick()

        t0 = time.perf_counter()
        th = threading.Thread(target=worker)
        th.start()
        th.join()
        # A stall = no publish completes for `--timeout` s while messages are still unconfirmed.
        last_left, last_change = -1, time.monotonic()
        while True:
            if link is not None and hasattr(link, "kick"):
                link.kick()
            left = sum(not i._published for i in infos)
            now = time.monotonic()
            if left == 0:
                break
            if left != last_left:
                last_left, last_change = left, now
            elif now - last_change > args.timeout:
                break
            if args.verbose:
                print(
                    f"  unconfirmed={left} out_packets={len(client._out_packet)} inflight={client._inflight_messages}",
                    flush=True,
                )
                time.sleep(0.5)
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        stuck = [i for i in infos if not i._published]
        detail = ""
        if stuck:
            with client._out_message_mutex:
                states = collections.Counter(
                    STATE_NAMES.get(int(m.state), m.state) for m in client._out_messages.values()
                )
                detail = (
                    f"stuck={len(stuck)} connected={client.is_connected()} "
                    f"inflight_counter={client._inflight_messages} max={client._max_inflight_messages} "
                    f"out_messages={len(client._out_messages)} states={dict(states)} "
                    f"out_packets={len(client._out_packet)} first_stuck_mid={stuck[0].mid} "
                    f"rc={[int(s.rc) for s in stuck[:5]]}"
                )
        if link is not None:
            link.close(timeout=2)
        else:
            client.disconnect()
            client.loop_stop()
        return not stuck, elapsed, detail


def daemon_run(args: argparse.Namespace, run: int, model_path: Path, tmp: Path) -> tuple[bool, float, str]:
    """The real Daemon in a thread, fed `--messages` QoS 1 readings by a separate publisher."""
    import json
    import random

    from edge_lstm.service.config import load_settings
    from edge_lstm.service.daemon import Daemon

    with PrivateBroker(persistence=True) as broker:
        settings = load_settings(
            None,
            model=str(model_path),
            state_dir=str(tmp / f"state-{run}-{time.monotonic_ns()}"),
            mqtt={
                "port": broker.port,
                "client_id": f"repro-d-{run}",
                "max_inflight": args.inflight,
                "receive_maximum": 1000,
                "protocol": "5" if args.v5 else "3.1.1",
                "reconnect_min_delay_s": 0.2,
                "reconnect_max_delay_s": 1.0,
            },
            log={"stats_interval_s": 0},
        )
        d = Daemon(settings)
        stop = threading.Event()
        th = threading.Thread(target=d.run, args=(stop,), daemon=True)
        th.start()
        if not d.ready.wait(15):
            raise SystemExit("daemon not ready")
        pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"repro-pub-{run}", protocol=paho.MQTTv5)
        pub.max_inflight_messages_set(1000)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        payloads = [
            (f"sensors/s{i % 200}", json.dumps({"ts": 1_700_000_000 + i // 200, "values": [i % 7, i % 5, i % 3]}))
            for i in range(args.messages)
        ]

        def feed() -> None:
            infos = []
            for k, (t, p) in enumerate(payloads):
                infos.append(pub.publish(t, p, qos=1))
                if k % 1000 == 999:  # keep at most ~1000 unconfirmed (survives broker restarts)
                    end = time.monotonic() + 60
                    while not infos[-1000]._published and time.monotonic() < end:
                        time.sleep(0.005)

        feeder = threading.Thread(target=feed, daemon=True)
        t0 = time.perf_counter()
        feeder.start()
        restarts_at = sorted(random.uniform(0.2, 2.0) for _ in range(args.restarts))
        last, last_change = -1, time.monotonic()
        ok = False
        while True:
            now = time.monotonic()
            if restarts_at and time.perf_counter() - t0 > restarts_at[0]:
                restarts_at.pop(0)
                broker.restart(down_s=0.1)
            done = d.counters.acked + d.counters.not_acked_old_connection
            if d.counters.acked >= args.messages and not d.pending:
                ok = True
                break
            if done != last or not d.link.connected:
                last, last_change = done, now
            elif now - last_change > args.timeout:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        detail = ""
        if not ok:
            c = d.link.client
            with c._out_message_mutex:
                states = collections.Counter(STATE_NAMES.get(int(m.state), m.state) for m in c._out_messages.values())
                p0 = d.pending[0] if d.pending else None
                detail = (
                    f"acked={d.counters.acked} pending={len(d.pending)} connected={d.link.connected} "
                    f"connects={d.link.connects} inflight_counter={c._inflight_messages} "
                    f"out_messages={len(c._out_messages)} states={dict(states)} "
                    f"out_packets={len(c._out_packet)} oldest_pending="
                    f"{[(i.mid, int(i.rc), i._published) for i in p0.infos] if p0 else None} "
                    f"oldest_in_out_messages={bool(p0 and p0.infos and p0.infos[0].mid in c._out_messages)}"
                )
        stop.set()
        th.join(20)
        pub.disconnect()
        pub.loop_stop()
        return ok, elapsed, detail


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--inflight", type=int, default=1000)
    ap.add_argument("--window", type=int, default=0, help="max unconfirmed publishes (0 = unbounded)")
    ap.add_argument("--size", type=int, default=60)
    ap.add_argument("--timeout", type=float, default=5.0, help="no progress for this long = stall")
    ap.add_argument("--v311", dest="v5", action="store_false")
    ap.add_argument("--echo", action="store_true", help="subscribe to own publishes, ack from the worker")
    ap.add_argument("--daemon", action="store_true", help="the real Daemon in a thread, fed by a publisher")
    ap.add_argument("--restarts", type=int, default=0, help="with --daemon: broker restarts during the run")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--link", action="store_true", help="go through edge_lstm.service.mqtt.MqttLink")
    args = ap.parse_args()
    bad = 0
    tmp = None
    if args.daemon:
        import tempfile

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from support.models import make_step_model

        tmp = Path(tempfile.mkdtemp(prefix="repro-stall-"))
        model_path = make_step_model(tmp / "model.onnx")
        from edge_lstm.service.logs import configure

        configure("warning", "console")
    for r in range(args.runs):
        if args.daemon:
            ok, elapsed, detail = daemon_run(args, r, model_path, tmp)
        else:
            ok, elapsed, detail = one_run(args, r)
        bad += not ok
        print(f"run {r + 1:3d}: {'ok   ' if ok else 'STALL'} {args.messages / elapsed:8.0f} msg/s {detail}", flush=True)
    print(f"{bad}/{args.runs} runs stalled")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
