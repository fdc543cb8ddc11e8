"""What comes back over MQTT during the demo: results matched against the injected ground truth."""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from .fleet import GRACE_STEPS, RECOVERY_STEPS, Fleet, Injected


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
        self.alarm_events: list[str] = []  # alarm raised / cleared lines, as they happen (printed, then cleared)
        self.alarms_raised = 0
        self.alarms_cleared = 0
        self.model: dict[str, str] | None = None
        self.threshold: float | None = None
        self.subscribed = threading.Event()
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-lstm-demo-view-{os.getpid()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        c.on_connect = lambda cl, *a: cl.subscribe(
            [("edge-lstm/scores/+", 1), ("edge-lstm/status", 1), ("edge-lstm/alarms/+", 1)]
        )
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = lambda cl, ud, msg: self.inbox.put((msg.topic, bytes(msg.payload)))
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
            elif topic.startswith("edge-lstm/alarms/"):
                self._alarm(payload)
            else:
                self._result(payload)

    def _alarm(self, payload: bytes) -> None:
        """An alarm change (retained on edge-lstm/alarms/<stream>): the moment Home Assistant's alarm
        entity turns ON or OFF."""
        try:
            doc = json.loads(payload)
            stream, state, since = str(doc["stream"]), str(doc["state"]), float(doc["since"])
            peak, readings = doc.get("peak_score"), int(doc.get("readings", 0))
        except (ValueError, KeyError, TypeError):
            self.bad_payloads += 1
            return
        at = time.strftime("%H:%M:%S")
        event_time = time.strftime("%H:%M:%S", time.localtime(since))
        peak_s = f"{peak:.2f}" if isinstance(peak, (int, float)) else "?"
        if state == "raised":
            self.alarms_raised += 1
            line = f"{at}  ALARM RAISED   {stream:<16} (event time {event_time}, score {peak_s})"
        else:
            self.alarms_cleared += 1
            line = (
                f"{at}  alarm cleared  {stream:<16} (event time {event_time}, after {readings} readings, peak {peak_s})"
            )
        self.alarm_events.append(line)
        self.feed.appendleft(line)

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


def summary(
    obs: Observer,
    fleet: Fleet,
    daemon_stats: dict[str, Any] | None,
    args: argparse.Namespace,
    wall: float,
    kinds: tuple[str, ...],
) -> str:
    done = [a for a in fleet.anomalies if a.published]
    lines = ["", "=== edge-lstm demo summary (from the results received over MQTT) ==="]
    m = obs.model or {}
    thr = f"{obs.threshold:.3g}" if isinstance(obs.threshold, (int, float)) else "none"
    lines.append(
        f"model {m.get('name', '?')} {m.get('version', '?')}, threshold {thr}; "
        f"{len(fleet.streams)} streams at {args.rate:g} readings/s each for {wall:.1f} s"
    )
    pct = 100.0 * obs.results / fleet.published if fleet.published else 0.0
    lines.append(
        f"readings published {fleet.published}, results received {obs.results} ({pct:.1f}%), "
        f"rate {obs.rate:,.0f} readings/s"
    )
    if daemon_stats is not None:
        rej = daemon_stats.get("rejected") or {}
        rej_s = ", ".join(f"{k}={v}" for k, v in sorted(rej.items()) if v) or "none"
        lines.append(
            f"daemon (its own counters): {daemon_stats.get('readings', 0)} readings processed, "
            f"{daemon_stats.get('results', 0)} results, {daemon_stats.get('model_calls', 0)} model calls, "
            f"rejected: {rej_s}"
        )
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
    lines.append(
        f"alarms (edge-lstm/alarms/<stream>; Home Assistant's Alarm entities): {obs.alarms_raised} raised, "
        f"{obs.alarms_cleared} cleared"
    )
    fa_pct = 100.0 * obs.false_alarms / obs.normal_scored if obs.normal_scored else 0.0
    lines.append(
        f"false alarms: {obs.false_alarms} flagged readings outside injected anomalies "
        f"({fa_pct:.2f}% of {obs.normal_scored} normal readings scored past warm-up) "
        f"on {len(obs.false_alarm_streams)} stream(s)"
    )
    if obs.normal_scored and fa_pct > 5.0:
        lines.append(
            "warning: the model flags more than 5% of normal readings, so the detections above "
            "mean little: check its calibration (edge-lstm inspect)"
        )
    longer = " and ".join(RECOVERY_STEPS)
    lines.append(
        f"(a flag counts for an injected anomaly from its start until {GRACE_STEPS} steps after it "
        f"ends; {GRACE_STEPS + max(RECOVERY_STEPS.values())} steps for {longer}, whose heat takes "
        "time to settle)"
    )
    if fleet.steps_done < fleet.total_steps:
        lines.append(
            f"note: the fleet published {fleet.steps_done} of {fleet.total_steps} planned steps per stream "
            "(stopped early, or publishing could not keep up with --rate x --streams)"
        )
    if fleet.error:
        lines.append(f"fleet error: {fleet.error}")
    return "\n".join(lines)
