"""`edge-lstm demo`: a private broker, a simulated fleet with injected anomalies, and the daemon, in one run.

    edge-lstm demo [--seconds 20] [--streams 40] [--rate 10] [--seed 0] [--no-live] [--model M]

What runs:
  - a private mosquitto on a free loopback port (`broker.PrivateBroker`; installs nothing);
  - the daemon itself (`daemon.Daemon`, the code `edge-lstm run` runs) in a thread, configured to use
    that broker and a temporary state directory; its log goes to a file in that directory;
  - a fleet of simulated machines (`simulate.Machine`), each publishing JSON readings with an event-time
    `ts` to `sensors/<stream>` over its own MQTT client, `--rate` readings per wall second per stream
    (each reading is one `sample_interval_s` of simulated time; timestamps are laid out so that the run
    ends at the present), with anomalies of every kind in `simulate.ANOMALY_KINDS` injected at random
    (seeded) times, the ground truth kept;
  - a subscriber on `edge-lstm/scores/+` that feeds the live view and the summary.

The summary is computed only from the results that came back over MQTT, matched against the ground
truth by stream and event time: an injected anomaly counts as detected when its stream is flagged
during the anomaly or within a few steps after it (longer after `overheat` and `stall`: temperature
settles with a lag); any other flag on a stream that is past its warm-up is a false alarm.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .contract import ModelFormatError

GRACE_STEPS = 5  # a flag this many steps after an anomaly ends still counts for it
# Kinds whose effect outlasts the injection: both heat the machine (overheat directly, stall through
# the current surge) and the temperature settles back with a lag (~0.85^k of the excursion after k steps).
RECOVERY_STEPS = {"overheat": 25, "stall": 25}
NAMES = ("pump", "fan", "press", "mill", "compressor", "conveyor", "chiller", "mixer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the fleet publishes (default 20)")
    parser.add_argument("--streams", type=int, default=40, help="simulated machines (default 40)")
    parser.add_argument("--rate", type=float, default=10.0, metavar="HZ",
                        help="readings per wall-clock second per stream; each reading is one sample "
                             "interval of simulated time (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fleet and its anomalies (default 0)")
    parser.add_argument("--no-live", action="store_true",
                        help="plain periodic lines instead of the live view (the default off a terminal)")
    parser.add_argument("--model", metavar="M", help="ONNX step model (default: the packaged model)")


# ---- ground truth -------------------------------------------------------------------------------


@dataclass
class Injected:
    stream: str
    kind: str
    start: int  # first step affected
    length: int  # steps affected
    window_end: int  # last step at which a flag still counts for this anomaly
    start_ts: float = 0.0
    window_end_ts: float = 0.0
    published: bool = False  # its whole window was published
    first_flag_ts: float | None = None


def schedule(streams: list[str], total_steps: int, warmup: int, rng: Any, kinds: tuple[str, ...]) -> list[Injected]:
    """Random anomalies: none before the warm-up is well over, at least ~60 steps apart on a stream."""
    out: list[Injected] = []
    k = int(rng.integers(0, len(kinds)))
    for s in streams:
        step = warmup + 10 + int(rng.integers(0, 60))
        while True:
            kind = kinds[k % len(kinds)]
            length = 1 if kind == "spike" else int(rng.integers(8, 20))
            window_end = step + length - 1 + GRACE_STEPS + RECOVERY_STEPS.get(kind, 0)
            if window_end >= total_steps:
                break
            out.append(Injected(s, kind, step, length, window_end))
            k += 1
            step = window_end + int(rng.integers(40, 120))
    return out


# ---- the fleet ----------------------------------------------------------------------------------


class Fleet:
    """Simulated machines publishing over their own MQTT client, on a wall-clock schedule."""

    def __init__(self, port: int, streams: list[str], seed: int, rate: float, total_steps: int,
                 interval: float, anomalies: list[Injected]) -> None:
        import paho.mqtt.client as paho

        from .simulate import Machine

        self.streams = streams
        self.machines = [Machine(seed * 100_003 + i) for i in range(len(streams))]
        self.rate = rate
        self.total_steps = total_steps
        self.interval = interval
        # Event time: the run's last reading is stamped about now, so no reading is from the future.
        self.t0 = time.time() - total_steps * interval
        self.by_step: dict[int, list[tuple[int, Injected]]] = {}
        index = {s: i for i, s in enumerate(streams)}
        for a in anomalies:
            a.start_ts = self.ts(a.start)
            a.window_end_ts = self.ts(a.window_end)
            self.by_step.setdefault(a.start, []).append((index[a.stream], a))
        self.anomalies = anomalies
        self.published = 0
        self.failed = 0
        self.steps_done = 0
        self.error: str | None = None
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"edge-lstm-demo-fleet-{os.getpid()}",
                                  protocol=paho.MQTTProtocolVersion.MQTTv5)
        self.client.max_inflight_messages_set(65_000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, name="demo-fleet", daemon=True)
        self.stop = threading.Event()

    def ts(self, step: int) -> float:
        return round(self.t0 + step * self.interval, 3)

    def start(self) -> None:
        self.started = time.monotonic()
        self.thread.start()

    def _run(self) -> None:
        from paho.mqtt.client import MQTT_ERR_SUCCESS

        tick = 1.0 / self.rate
        next_at = time.monotonic()
        # If publishing cannot keep up with the rate, stop at the planned duration (plus slack) anyway.
        deadline = next_at + self.total_steps * tick + 2.0
        try:
            for step in range(self.total_steps):
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                for i, a in self.by_step.get(step, []):
                    self.machines[i].inject(a.kind, a.length)
                ts = self.ts(step)
                for stream, m in zip(self.streams, self.machines):
                    temperature, vibration, current = m.step()
                    payload = json.dumps({"ts": ts, "temperature": temperature, "vibration": vibration,
                                          "current": current})
                    info = self.client.publish(f"sensors/{stream}", payload, qos=1)
                    if info.rc == MQTT_ERR_SUCCESS:
                        self.published += 1
                    else:
                        self.failed += 1
                self.steps_done = step + 1
                next_at += tick
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
        except Exception as e:  # reported in the summary, not swallowed
            self.error = f"{type(e).__name__}: {e}"
        for a in self.anomalies:
            a.published = a.window_end < self.steps_done

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()


# ---- what comes back over MQTT ------------------------------------------------------------------


@dataclass
class StreamView:
    score: float = 0.0
    anomaly: bool = False
    warming_up: bool = True
    results: int = 0
    flags: int = 0
    history: deque[float] = field(default_factory=lambda: deque(maxlen=12))


class Observer:
    """Subscribes to the results and the daemon's status; keeps everything the view and summary use."""

    def __init__(self, port: int, interval: float, anomalies: list[Injected]) -> None:
        import paho.mqtt.client as paho

        self.inbox: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self.interval = interval
        self.streams: dict[str, StreamView] = {}
        self.truth: dict[str, list[Injected]] = {}
        for a in anomalies:
            self.truth.setdefault(a.stream, []).append(a)
        self.results = 0
        self.flagged = 0
        self.warming = 0
        self.bad_payloads = 0
        self.false_alarms = 0  # flagged readings matching no injected anomaly
        self.false_alarm_streams: set[str] = set()
        self.normal_scored = 0  # past warm-up, outside every anomaly window
        self.status: bytes | None = None
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.feed: deque[str] = deque(maxlen=8)
        self.episodes: list[tuple[float, str, str]] = []  # new flag episodes, for plain output
        self.model: dict[str, str] | None = None
        self.threshold: float | None = None
        self.subscribed = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"edge-lstm-demo-view-{os.getpid()}",
                        protocol=paho.MQTTProtocolVersion.MQTTv5)
        c.on_connect = lambda cl, *a: cl.subscribe([("edge-lstm/scores/+", 1), ("edge-lstm/status", 1)])
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = lambda cl, ud, msg: self.inbox.put((msg.topic, msg.payload))
        self.client = c
        c.connect("127.0.0.1", port)
        c.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def window_of(self, stream: str, ts: float) -> Injected | None:
        eps = self.interval * 1e-3
        for a in self.truth.get(stream, ()):
            if a.start_ts - eps <= ts <= a.window_end_ts + eps:
                return a
        return None

    def drain(self) -> int:
        n = 0
        while True:
            try:
                topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                return n
            n += 1
            if topic == "edge-lstm/status":
                self.status = payload
                continue
            self._result(payload)

    def _result(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            stream, ts, score = str(doc["stream"]), float(doc["ts"]), float(doc["score"])
            anomaly, warming = bool(doc["anomaly"]), bool(doc["warming_up"])
        except (ValueError, KeyError, TypeError):
            self.bad_payloads += 1
            return
        now = time.monotonic()
        self.first_at = self.first_at or now
        self.last_at = now
        self.model = doc.get("model") or self.model
        self.threshold = doc.get("threshold", self.threshold)
        self.results += 1
        v = self.streams.setdefault(stream, StreamView())
        was_flagged = v.anomaly
        v.score, v.anomaly, v.warming_up = score, anomaly, warming
        v.results += 1
        v.history.append(score)
        a = self.window_of(stream, ts)
        if warming:
            self.warming += 1
        elif a is None:
            self.normal_scored += 1
        if not anomaly:
            return
        self.flagged += 1
        v.flags += 1
        if a is not None:
            if a.first_flag_ts is None or ts < a.first_flag_ts:
                a.first_flag_ts = ts
            verdict = f"injected {a.kind}: detected"
        else:
            self.false_alarms += 1
            self.false_alarm_streams.add(stream)
            verdict = "nothing injected: false alarm"
        if not was_flagged:
            line = f"{time.strftime('%H:%M:%S')}  {stream:<16} score {score:7.2f}  {verdict}"
            self.feed.appendleft(line)
            self.episodes.append((now, stream, line))

    @property
    def rate(self) -> float:
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return 0.0
        return (self.results - 1) / (self.last_at - self.first_at)


# ---- rendering ----------------------------------------------------------------------------------


class Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text


def bar(score: float, threshold: float | None, width: int = 12) -> str:
    full = 2.0 * (threshold or 1.0)
    n = min(width, int(round(width * min(score, full) / full))) if math.isfinite(score) else width
    return "█" * n + "·" * (width - n)


def render_live(obs: Observer, fleet: Fleet, header: str, elapsed: float, seconds: float, style: Style) -> str:
    cols, rows = shutil.get_terminal_size((100, 40))
    thr = obs.threshold
    active = {a.stream: a.kind for a in fleet.anomalies
              if a.start <= fleet.steps_done - 1 < a.start + a.length}
    detected = sum(a.first_flag_ts is not None for a in fleet.anomalies if a.start < fleet.steps_done)
    injected = sum(a.start < fleet.steps_done for a in fleet.anomalies)
    lines = [
        style(header, "1"),
        f"t {elapsed:5.1f}/{seconds:.0f} s   published {fleet.published}   results {obs.results}   "
        f"{obs.rate:,.0f} readings/s   flagged {obs.flagged}",
        f"anomalies injected {injected} (active now {len(active)})   detected {detected}   "
        f"false-alarm readings {obs.false_alarms}   threshold {f'{thr:.3g}' if thr is not None else '-'}",
        "",
    ]
    cell_w = 44
    n_cols = max(1, cols // cell_w)
    feed_h = 2 + len(obs.feed)
    avail = max(4, rows - len(lines) - feed_h - 2)
    names = fleet.streams
    if len(names) > avail * n_cols:  # too many to show: the highest scores first
        names = sorted(names, key=lambda s: -(obs.streams[s].score if s in obs.streams else 0.0))
        names = names[: avail * n_cols]
    n_rows = math.ceil(len(names) / n_cols)
    grid = []
    for r in range(n_rows):
        cells = []
        for c in range(n_cols):
            i = c * n_rows + r
            if i >= len(names):
                break
            s = names[i]
            v = obs.streams.get(s)
            if v is None:
                cell = f"{s:<14} {'waiting':<21}"
                cells.append(style(cell, "2"))
                continue
            b = bar(v.score, thr)
            mark = active.get(s, "")
            text = f"{s:<14} {b} {v.score:6.2f}"
            if v.warming_up:
                text = style(text, "2")
            elif v.anomaly:
                text = style(text, "1;31")
            elif thr and v.score > 0.7 * thr:
                text = style(text, "33")
            cells.append(text + " " + style(f"{mark[:8]:<8}", "35"))
        grid.append("  ".join(cells))
    lines += grid
    if len(names) < len(fleet.streams):
        lines.append(style(f"(showing the {len(names)} highest scores of {len(fleet.streams)} streams)", "2"))
    lines += ["", style("flagged (newest first):", "1")]
    lines += list(obs.feed) or [style("  nothing flagged yet", "2")]
    return "\x1b[H" + "\n".join(line + "\x1b[K" for line in lines) + "\x1b[J"


def plain_line(obs: Observer, fleet: Fleet, elapsed: float) -> str:
    injected = sum(a.start < fleet.steps_done for a in fleet.anomalies)
    detected = sum(a.first_flag_ts is not None for a in fleet.anomalies)
    return (f"demo t={elapsed:.1f}s published={fleet.published} results={obs.results} "
            f"rate={obs.rate:.0f}/s flagged={obs.flagged} injected={injected} detected={detected} "
            f"false_alarm_readings={obs.false_alarms}")


def summary(obs: Observer, fleet: Fleet, daemon_stats: dict[str, Any] | None, args: argparse.Namespace,
            wall: float, kinds: tuple[str, ...]) -> str:
    done = [a for a in fleet.anomalies if a.published]
    lines = ["", "=== edge-lstm demo summary (from the results received over MQTT) ==="]
    m = obs.model or {}
    thr = f"{obs.threshold:.3g}" if isinstance(obs.threshold, (int, float)) else "none"
    lines.append(f"model {m.get('name', '?')} {m.get('version', '?')}, threshold {thr}; "
                 f"{len(fleet.streams)} streams at {args.rate:g} readings/s each for {wall:.1f} s")
    pct = 100.0 * obs.results / fleet.published if fleet.published else 0.0
    lines.append(f"readings published {fleet.published}, results received {obs.results} ({pct:.1f}%), "
                 f"rate {obs.rate:,.0f} readings/s")
    if daemon_stats is not None:
        rej = daemon_stats.get("rejected") or {}
        rej_s = ", ".join(f"{k}={v}" for k, v in sorted(rej.items()) if v) or "none"
        lines.append(f"daemon (its own counters): {daemon_stats.get('readings', 0)} readings processed, "
                     f"{daemon_stats.get('results', 0)} results, {daemon_stats.get('model_calls', 0)} model calls, "
                     f"rejected: {rej_s}")
    if obs.bad_payloads:
        lines.append(f"unreadable result payloads: {obs.bad_payloads}")
    det = [a for a in done if a.first_flag_ts is not None]
    rate = f" ({100.0 * len(det) / len(done):.0f}%)" if done else ""
    lines.append(f"anomalies injected {len(done)}, detected {len(det)}{rate}:")
    for kind in kinds:
        ks = [a for a in done if a.kind == kind]
        if not ks:
            continue
        kd = [a for a in ks if a.first_flag_ts is not None]
        delays = [(a.first_flag_ts - a.start_ts) / fleet.interval for a in kd]  # type: ignore[operator]
        delay = f", median delay {statistics.median(delays):.0f} steps" if delays else ""
        lines.append(f"  {kind:<10} {len(kd):>3}/{len(ks)}{delay}")
    fa_pct = 100.0 * obs.false_alarms / obs.normal_scored if obs.normal_scored else 0.0
    lines.append(f"false alarms: {obs.false_alarms} flagged readings outside injected anomalies "
                 f"({fa_pct:.2f}% of {obs.normal_scored} normal readings scored past warm-up) "
                 f"on {len(obs.false_alarm_streams)} stream(s)")
    if obs.normal_scored and fa_pct > 5.0:
        lines.append("warning: the model flags more than 5% of normal readings, so the detections above "
                     "mean little: check its calibration (edge-lstm inspect)")
    longer = " and ".join(RECOVERY_STEPS)
    lines.append(f"(a flag counts for an injected anomaly from its start until {GRACE_STEPS} steps after it "
                 f"ends; {GRACE_STEPS + max(RECOVERY_STEPS.values())} steps for {longer}, whose heat takes "
                 "time to settle)")
    if fleet.steps_done < fleet.total_steps:
        lines.append(f"note: the fleet published {fleet.steps_done} of {fleet.total_steps} planned steps per stream "
                     "(stopped early, or publishing could not keep up with --rate x --streams)")
    if fleet.error:
        lines.append(f"fleet error: {fleet.error}")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    def fail(msg: str) -> int:
        print(f"edge-lstm demo: {msg}", file=sys.stderr)
        return 2

    if args.seconds <= 0 or args.streams < 1 or args.rate <= 0:
        return fail("--seconds and --rate must be > 0, --streams >= 1")
    import numpy as np

    from .broker import BrokerUnavailable, PrivateBroker
    from .config import CheckpointSettings, EngineSettings, LogSettings, MqttSettings, Settings
    from .daemon import Daemon
    from .logs import configure
    from .model import default_model_path, load_model
    from .simulate import ANOMALY_KINDS, FEATURES

    try:
        model = load_model(args.model)
    except ModelFormatError as e:
        where = args.model or f"the packaged model ({default_model_path()})"
        return fail(f"{where}: {e}")
    meta = model.meta
    missing = [f for f in meta.features if f not in FEATURES]
    if missing:
        return fail(f"the model needs features {missing} that the simulated machines do not have "
                    f"(they send {list(FEATURES)})")
    if meta.output.kind == "forecast" and meta.calibration is None:
        print("edge-lstm demo: note: the model has no calibration, so nothing will be flagged", file=sys.stderr)
    interval = meta.sample_interval_s or 1.0
    total_steps = max(1, int(round(args.seconds * args.rate)))
    warmup = max(meta.warmup_steps, 1)
    rng = np.random.default_rng(args.seed)
    streams = [f"{NAMES[i % len(NAMES)]}-{i + 1:02d}" for i in range(args.streams)]
    anomalies = schedule(streams, total_steps, warmup, rng, ANOMALY_KINDS)
    if not anomalies:
        print(f"edge-lstm demo: note: {total_steps} steps per stream leave no room for anomalies after the "
              f"{warmup}-step warm-up: raise --seconds or --rate", file=sys.stderr)

    live = not args.no_live and sys.stdout.isatty()
    style = Style(live and os.environ.get("NO_COLOR") is None)
    try:
        broker = PrivateBroker()
    except BrokerUnavailable as e:
        return fail(str(e))
    tmp = tempfile.TemporaryDirectory(prefix="edge-lstm-demo-")
    log_file: TextIO = open(Path(tmp.name) / "daemon.log", "w")
    configure("info", "json", stream=log_file)
    stop = threading.Event()
    daemon_error: list[str] = []
    fleet = observer = None
    thread = None
    d = None
    try:
        try:
            broker.start()
        except BrokerUnavailable as e:
            return fail(str(e))
        # The demo is self-contained: EDGE_LSTM_* variables meant for a real daemon (TLS, another
        # broker, ...) must not leak into it, so environment variables are read under a prefix nobody sets.
        settings = Settings(
            _env_prefix="EDGE_LSTM_DEMO_IGNORES_ENV_",
            model=Path(model.path),
            state_dir=Path(tmp.name) / "state",
            mqtt=MqttSettings(host="127.0.0.1", port=broker.port, client_id=f"edge-lstm-demo-{os.getpid()}"),
            engine=EngineSettings(),
            log=LogSettings(level="info", stats_interval_s=0),
            checkpoint=CheckpointSettings(enabled=False),
        )
        d = Daemon(settings, model)

        def run_daemon() -> None:
            try:
                d.run(stop)
            except BaseException as e:  # noqa: BLE001 - reported to the user below
                daemon_error.append(f"{type(e).__name__}: {e}")

        observer = Observer(broker.port, interval, anomalies)
        thread = threading.Thread(target=run_daemon, name="demo-daemon", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (observer.subscribed.is_set() and d.ready.is_set()
                                                   and observer.status == b"online"):
            if daemon_error or not thread.is_alive():
                return fail(f"the daemon stopped at start: {daemon_error or 'see ' + log_file.name}")
            observer.drain()
            time.sleep(0.02)
        if observer.status != b"online":
            return fail(f"the daemon did not come online within 15 s (log: {log_file.name})")

        fleet = Fleet(broker.port, streams, args.seed, args.rate, total_steps, interval, anomalies)
        header = (f"edge-lstm demo · model {meta.name} {meta.version} · broker 127.0.0.1:{broker.port} · "
                  f"{args.streams} streams × {args.rate:g} Hz")
        if live:
            sys.stdout.write("\x1b[2J")
        else:
            print(f"{header} · daemon online (edge-lstm/status = online); fleet publishing for {args.seconds:g} s",
                  flush=True)
        fleet.start()
        started = time.monotonic()
        last_plain = started
        interrupted = False
        try:
            while fleet.thread.is_alive():
                observer.drain()
                now = time.monotonic()
                if daemon_error or not thread.is_alive():
                    break
                if live:
                    sys.stdout.write(render_live(observer, fleet, header, now - started, args.seconds, style))
                    sys.stdout.flush()
                else:
                    for _, _, line in observer.episodes:
                        print(f"  flagged {line}", flush=True)
                    observer.episodes.clear()
                    if now - last_plain >= 2.0:
                        last_plain = now
                        print(plain_line(observer, fleet, now - started), flush=True)
                fleet.thread.join(timeout=0.25 if live else 0.1)
        except KeyboardInterrupt:
            interrupted = True
        fleet.close()
        wall = time.monotonic() - started
        # Let the results of the last readings come back: until all have, or nothing arrives for 2 s.
        quiet_since = time.monotonic()
        end = quiet_since + 15
        while observer.results < fleet.published and time.monotonic() < end:
            if observer.drain():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 2.0:
                break
            time.sleep(0.02)
        observer.drain()
        if live:
            sys.stdout.write(render_live(observer, fleet, header, wall, args.seconds, style) + "\n")
        else:
            for _, _, line in observer.episodes:
                print(f"  flagged {line}", flush=True)
        stop.set()
        thread.join(timeout=20)
        stats = d.stats()
        print(summary(observer, fleet, stats, args, wall, ANOMALY_KINDS), flush=True)
        if interrupted:
            print("(interrupted)")
        if daemon_error:
            print(f"edge-lstm demo: the daemon failed: {daemon_error[0]} (log: {log_file.name})", file=sys.stderr)
            return 1
        if thread.is_alive():
            print("edge-lstm demo: the daemon did not stop within 20 s", file=sys.stderr)
            return 1
        return 0
    finally:
        stop.set()
        if fleet is not None:
            fleet.close()
        if observer is not None:
            observer.close()
        if thread is not None:
            thread.join(timeout=20)
        broker.stop()
        log_file.close()
        configure("info", "auto")
        tmp.cleanup()
