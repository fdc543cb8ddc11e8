"""The demo's simulated fleet and its ground truth: which anomaly was injected where and when."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from .simulate import Machine

GRACE_STEPS = 5  # a flag this many steps after an anomaly ends still counts for it
# Kinds whose effect outlasts the injection: both heat the machine (overheat directly, stall through
# the current surge) and the temperature settles back with a lag (~0.85^k of the excursion after k steps).
RECOVERY_STEPS = {"overheat": 25, "stall": 25}
NAMES = ("pump", "fan", "press", "mill", "compressor", "conveyor", "chiller", "mixer")


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

    def __init__(
        self,
        port: int,
        streams: list[str],
        seed: int,
        rate: float,
        total_steps: int,
        interval: float,
        anomalies: list[Injected],
    ) -> None:
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
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-lstm-demo-fleet-{os.getpid()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
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
                    payload = json.dumps(
                        {"ts": ts, "temperature": temperature, "vibration": vibration, "current": current}
                    )
                    info = self.client.publish(f"sensors/{stream}", payload, qos=1)
                    if info.rc == paho.MQTT_ERR_SUCCESS:
                        self.published += 1
                    else:
                        self.failed += 1
                self.steps_done = step + 1
                next_at += tick
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
        except Exception as e:  # noqa: BLE001 - reported in the summary, not swallowed
            self.error = f"{type(e).__name__}: {e}"
        for a in self.anomalies:
            a.published = a.window_end < self.steps_done

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()


# ---- what comes back over MQTT ------------------------------------------------------------------
