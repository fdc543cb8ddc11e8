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
import contextlib
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..contract import ModelFormatError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the fleet publishes (default 20)")
    parser.add_argument("--streams", type=int, default=40, help="simulated machines (default 40)")
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        metavar="HZ",
        help="readings per wall-clock second per stream; each reading is one sample "
        "interval of simulated time (default 10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fleet and its anomalies (default 0)")
    parser.add_argument(
        "--no-live",
        action="store_true",
        help="plain periodic lines instead of the live view (the default off a terminal)",
    )
    parser.add_argument("--model", metavar="M", help="ONNX step model (default: the packaged model)")


@dataclass
class _Plan:
    """What the demo will do, decided before anything starts."""

    model: Any
    streams: list[str]
    anomalies: list[Any]
    interval: float
    total_steps: int
    live: bool


def _fail(msg: str) -> int:
    print(f"edge-lstm demo: {msg}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.streams < 1 or args.rate <= 0:
        return _fail("--seconds and --rate must be > 0, --streams >= 1")
    import numpy as np

    from ..demo.broker import BrokerUnavailable, PrivateBroker
    from ..demo.fleet import NAMES, schedule
    from ..demo.simulate import ANOMALY_KINDS, FEATURES
    from ..onnx_model import default_model_path, load_model

    try:
        model = load_model(args.model)
    except ModelFormatError as e:
        where = args.model or f"the packaged model ({default_model_path()})"
        return _fail(f"{where}: {e}")
    meta = model.meta
    missing = [f for f in meta.features if f not in FEATURES]
    if missing:
        return _fail(
            f"the model needs features {missing} that the simulated machines do not have (they send {list(FEATURES)})"
        )
    if meta.output.kind == "forecast" and meta.calibration is None:
        print("edge-lstm demo: note: the model has no calibration, so nothing will be flagged", file=sys.stderr)
    total_steps = max(1, int(round(args.seconds * args.rate)))
    warmup = max(meta.warmup_steps, 1)
    rng = np.random.default_rng(args.seed)
    streams = [f"{NAMES[i % len(NAMES)]}-{i + 1:02d}" for i in range(args.streams)]
    anomalies = schedule(streams, total_steps, warmup, rng, ANOMALY_KINDS)
    if not anomalies:
        print(
            f"edge-lstm demo: note: {total_steps} steps per stream leave no room for anomalies after the "
            f"{warmup}-step warm-up: raise --seconds or --rate",
            file=sys.stderr,
        )
    plan = _Plan(
        model,
        streams,
        anomalies,
        meta.sample_interval_s or 1.0,
        total_steps,
        live=not args.no_live and sys.stdout.isatty(),
    )
    try:
        broker = PrivateBroker()
        with contextlib.ExitStack() as cleanup:
            return _run(args, plan, broker, cleanup)
    except BrokerUnavailable as e:
        return _fail(str(e))


def _run(args: argparse.Namespace, plan: _Plan, broker: Any, cleanup: contextlib.ExitStack) -> int:
    """Everything the demo starts is registered on `cleanup` and undone in reverse order on any exit."""
    from ..demo.fleet import Fleet
    from ..demo.observer import Observer, summary
    from ..demo.simulate import ANOMALY_KINDS
    from ..demo.view import Style, plain_line, render_live
    from ..service.config import CheckpointSettings, EngineSettings, LogSettings, MqttSettings, Settings
    from ..service.daemon import Daemon
    from ..service.logs import configure

    model, meta, live = plan.model, plan.model.meta, plan.live
    style = Style(live and os.environ.get("NO_COLOR") is None)
    tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="edge-lstm-demo-")))
    log_file: TextIO = cleanup.enter_context(open(tmp / "daemon.log", "w"))
    configure("info", "json", stream=log_file)
    cleanup.callback(configure, "info", "auto")
    broker.start()
    cleanup.callback(broker.stop)
    # The demo is self-contained: EDGE_LSTM_* variables meant for a real daemon (TLS, another
    # broker, ...) must not leak into it, so environment variables are read under a prefix nobody sets.
    settings = Settings(
        _env_prefix="EDGE_LSTM_DEMO_IGNORES_ENV_",  # type: ignore[call-arg]  # pydantic-settings init kwarg
        model=Path(model.path),
        state_dir=tmp / "state",
        mqtt=MqttSettings(host="127.0.0.1", port=broker.port, client_id=f"edge-lstm-demo-{os.getpid()}"),
        engine=EngineSettings(),
        log=LogSettings(level="info", stats_interval_s=0),
        checkpoint=CheckpointSettings(enabled=False),
    )
    d = Daemon(settings, model)
    stop = threading.Event()
    daemon_error: list[str] = []
    observer = Observer(broker.port, plan.interval, plan.anomalies)
    cleanup.callback(observer.close)
    thread = threading.Thread(target=_run_daemon, args=(d, stop, daemon_error), name="demo-daemon", daemon=True)
    thread.start()
    cleanup.callback(thread.join, 20)
    cleanup.callback(stop.set)
    problem = _wait_online(observer, d, thread, daemon_error, log_file.name)
    if problem is not None:
        return _fail(problem)

    streams, anomalies, interval, total_steps = plan.streams, plan.anomalies, plan.interval, plan.total_steps
    fleet = Fleet(broker.port, streams, args.seed, args.rate, total_steps, interval, anomalies)
    cleanup.callback(fleet.close)
    header = (
        f"edge-lstm demo · model {meta.name} {meta.version} · broker 127.0.0.1:{broker.port} · "
        f"{args.streams} streams × {args.rate:g} Hz"
    )
    if live:
        sys.stdout.write("\x1b[2J")
    else:
        print(
            f"{header} · daemon online (edge-lstm/status = online); fleet publishing for {args.seconds:g} s", flush=True
        )
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
                _print_flagged(observer)
                if now - last_plain >= 2.0:
                    last_plain = now
                    print(plain_line(observer, fleet, now - started), flush=True)
            fleet.thread.join(timeout=0.25 if live else 0.1)
    except KeyboardInterrupt:
        interrupted = True
    fleet.close()
    wall = time.monotonic() - started
    _drain_last(observer, fleet)
    if live:
        sys.stdout.write(render_live(observer, fleet, header, wall, args.seconds, style) + "\n")
    else:
        _print_flagged(observer)
    stop.set()
    thread.join(timeout=20)
    print(summary(observer, fleet, d.stats(), args, wall, ANOMALY_KINDS), flush=True)
    if interrupted:
        print("(interrupted)")
    return _exit_code(daemon_error, thread, log_file.name)


def _run_daemon(d: Any, stop: threading.Event, daemon_error: list[str]) -> None:
    try:
        d.run(stop)
    except BaseException as e:  # noqa: BLE001 - reported to the user (_exit_code)
        daemon_error.append(f"{type(e).__name__}: {e}")


def _print_flagged(observer: Any) -> None:
    """The flag episodes and alarm events since the last call, one line each (plain output)."""
    for _, _, line in observer.episodes:
        print(f"  flagged {line}", flush=True)
    observer.episodes.clear()
    for line in observer.alarm_events:
        print(f"  {line}", flush=True)
    observer.alarm_events.clear()


def _wait_online(observer: Any, d: Any, thread: threading.Thread, daemon_error: list[str], log_name: str) -> str | None:
    """Wait (15 s at most) until the observer is subscribed and the daemon ready and online; else why not."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (
        observer.subscribed.is_set() and d.ready.is_set() and observer.status == b"online"
    ):
        if daemon_error or not thread.is_alive():
            return f"the daemon stopped at start: {daemon_error or 'see ' + log_name}"
        observer.drain()
        time.sleep(0.02)
    if observer.status != b"online":
        return f"the daemon did not come online within 15 s (log: {log_name})"
    return None


def _drain_last(observer: Any, fleet: Any) -> None:
    """Let the results of the last readings come back: until all have, or nothing arrives for 2 s."""
    quiet_since = time.monotonic()
    end = quiet_since + 15
    while observer.results < fleet.published and time.monotonic() < end:
        if observer.drain():
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 2.0:
            break
        time.sleep(0.02)
    observer.drain()


def _exit_code(daemon_error: list[str], thread: threading.Thread, log_name: str) -> int:
    if daemon_error:
        print(f"edge-lstm demo: the daemon failed: {daemon_error[0]} (log: {log_name})", file=sys.stderr)
        return 1
    if thread.is_alive():
        print("edge-lstm demo: the daemon did not stop within 20 s", file=sys.stderr)
        return 1
    return 0
