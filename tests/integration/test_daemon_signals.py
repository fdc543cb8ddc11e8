"""Signals: SIGHUP (and `systemctl reload`) reloads the configuration and the model in place; SIGTERM
stops cleanly (also tests/integration/test_daemon_mqtt.py); SIGUSR1 dumps the threads' stacks. Each
reaches an idle worker even when it gets the GIL back late."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import support
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.faults import wait_until
from support.models import make_step_model
from support.mqtt import Collector, Publisher
from support.outcomes import present, scored
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def send(pub: Publisher, start: int, n: int) -> None:
    for i in range(start, start + n):
        pub.send("sensors/pump-7", reading_payload(T0 + i, [0.1 * (i % 5), 0.2, 0.3]))
    pub.flush()


def serving(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
    readings: int,
) -> tuple[Path, Collector, DaemonProcess, Publisher]:
    """A daemon on a copy of the model (so the test can change the file), `readings` already scored."""
    model = tmp_path / "model.onnx"
    shutil.copy(step_model_path, model)
    col = collector(broker.port, ["edge-lstm/scores/#"])
    d = run_daemon(daemon_config(broker, model, tmp_path / "state"))
    d.wait_ready()
    pub = publisher(broker.port)
    send(pub, 0, readings)
    col.wait_count("edge-lstm/scores/", readings)
    assert d.proc is not None
    return model, col, d, pub


def test_sighup_reloads_in_place(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    """Same state signature (here: the same model file, re-read): the pid stays, no stream warms up again,
    and the results equal an uninterrupted run's."""
    model, col, d, pub = serving(broker, step_model_path, tmp_path, run_daemon, collector, publisher, 5)
    pid = present(d.proc).pid
    present(d.proc).send_signal(signal.SIGHUP)
    reloaded = d.wait_event("reloaded")
    assert reloaded["streams_kept"] == 1
    send(pub, 5, 5)
    results = col.wait_count("edge-lstm/scores/", 10)
    assert present(d.proc).pid == pid and present(d.proc).poll() is None
    assert results[5]["warming_up"] is False  # the stream kept its state

    # The uninterrupted reference: the same readings through an in-process engine.
    from edge_lstm import Engine, Reading, load_model

    engine = Engine(load_model(model))
    ref = [scored(engine.process([Reading("pump-7", T0 + i, (0.1 * (i % 5), 0.2, 0.3))])[0]) for i in range(10)]
    assert [r["score"] for r in results] == pytest.approx([r.score for r in ref], rel=1e-5, abs=1e-6)  # 6 digits
    assert d.terminate() == 0


def test_sighup_with_a_broken_model_is_refused_and_serving_goes_on(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    model, col, d, pub = serving(broker, step_model_path, tmp_path, run_daemon, collector, publisher, 3)
    model.write_bytes(b"not a model")  # a bad deploy
    present(d.proc).send_signal(signal.SIGHUP)
    refused = d.wait_event("reload_refused")
    assert "model" in refused["error"]
    send(pub, 3, 3)
    results = col.wait_count("edge-lstm/scores/", 6)
    assert present(d.proc).poll() is None and results[5]["warming_up"] is False
    assert d.terminate() == 0


def test_sighup_with_another_model_restarts_fresh(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    """Another state signature cannot keep the streams' state: the daemon re-executes itself (same pid),
    the old checkpoint is set aside, and streams start fresh."""
    model, col, d, pub = serving(broker, step_model_path, tmp_path, run_daemon, collector, publisher, 3)
    make_step_model(model, hidden=12)  # other state shapes
    pid = present(d.proc).pid
    present(d.proc).send_signal(signal.SIGHUP)
    d.wait_event("reload_model_changed")
    d.wait_event("checkpoint_set_aside", timeout=60)
    d.wait_event("mqtt_subscribed", count=2, timeout=60)
    send(pub, 3, 1)
    results = col.wait_count("edge-lstm/scores/", 4)
    assert present(d.proc).pid == pid and results[3]["warming_up"] is True
    assert d.terminate() == 0


def test_example_units_reload_with_sighup() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for unit in ("edge-lstm.service", "edge-lstm@.service"):
        assert "ExecReload=/bin/kill -HUP $MAINPID" in (root / "systemd" / unit).read_text()


def test_sigusr1_dumps_every_threads_stack_and_serving_goes_on(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    """For a daemon that looks stuck (docs/operations.md): the stacks go to stderr (the journal), nothing
    else changes."""
    model, col, d, pub = serving(broker, step_model_path, tmp_path, run_daemon, collector, publisher, 3)
    present(d.proc).send_signal(signal.SIGUSR1)
    # faulthandler names the worker (main thread, in the daemon's loop) and paho's network thread.
    wait_until(
        lambda: all(s in d.text() for s in ("most recent call first", "in run", "paho")), 10, "a stack dump on stderr"
    )
    dump = d.text()
    assert "daemon.py" in dump and "paho" in dump, dump[-3000:]
    send(pub, 3, 3)
    results = col.wait_count("edge-lstm/scores/", 6)
    assert present(d.proc).poll() is None and results[5]["warming_up"] is False
    assert d.terminate() == 0


def scripted_daemon(
    broker: PrivateBroker, model: Path, tmp_path: Path, script: str, *script_args: str
) -> DaemonProcess:
    """`edge-lstm run` (not yet started) through one of tests/support's signal scripts, which takes
    `script_args` before the daemon's own arguments."""
    d = DaemonProcess(
        tmp_path / "d",
        settings={
            "model": model,
            "state_dir": tmp_path / "state",
            "mqtt.port": broker.port,
            "mqtt.client_id": f"{Path(script).stem}-{'-'.join(script_args[:1])}-{os.getpid()}",
        },
    )
    d.args = [sys.executable, str(Path(support.__file__).parent / script), *script_args, "run"]
    return d


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGUSR1"])
def test_a_signal_reaches_an_idle_worker_that_gets_the_gil_back_late(
    broker: PrivateBroker, step_model_path: Path, tmp_path: Path, sig: str
) -> None:
    """The signal interrupts the idle worker's inbox wait and another thread keeps the GIL past that
    wait's deadline (support/signal_under_load.py). Without the handlers' wake-up, CPython < 3.13 leaves
    the worker blocked until a message arrives: SIGTERM never stops an idle daemon (seen in CI), SIGHUP
    never reloads, and after SIGUSR1 the worker is stuck."""
    go = tmp_path / "go"
    d = scripted_daemon(broker, step_model_path, tmp_path, "signal_under_load.py", sig, str(go))
    try:
        d.start().wait_ready()
        d.wait_event("stats")  # serving, idle: the worker sits in its inbox wait
        go.touch()
        if sig == "SIGTERM":
            assert d.proc is not None
            assert present(d.proc).wait(timeout=15) == 0, d.text()[-3000:]
            assert d.wait_event("stopped")
        else:
            if sig == "SIGHUP":
                d.wait_event("reloaded", timeout=10)
            else:
                wait_until(lambda: "most recent call first" in d.text(), 10, "a stack dump")
            # The worker goes on: more stats lines after the signal.
            after = d.text().index("TRIGGER")
            wait_until(lambda: d.text().count('"stats"', after) >= 2, 10, "stats lines after the signal")
            assert d.terminate() == 0
        # Nothing reached the inbox but the handlers' wake-up (no reading, no PUBACK): else the worker
        # would have been woken anyway and the test would pass without it.
        stats = [e for e in d.events() if e.get("event") == "stats"]
        assert stats and all(e["received"] == 0 for e in stats), stats
    finally:
        d.stop()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGUSR1"])
def test_a_signal_while_the_model_loads_is_handled(
    broker: PrivateBroker, step_model_path: Path, tmp_path: Path, sig: str
) -> None:
    """Before the daemon exists: SIGTERM stops at once (exit 0, never connected); SIGHUP's reload is
    done once serving (not the default action, which kills); SIGUSR1 dumps the stacks and start-up goes
    on (its default action kills too)."""
    d = scripted_daemon(broker, step_model_path, tmp_path, "signal_at_start.py", sig)
    try:
        d.start()
        assert d.proc is not None
        if sig == "SIGTERM":
            assert present(d.proc).wait(timeout=30) == 0, d.text()[-3000:]
            stopped = d.wait_event("stopped")
            assert stopped["reason"] == "signal SIGTERM"
            assert not any(e.get("event") == "mqtt_connected" for e in d.events()), d.text()[-3000:]
        else:
            d.wait_ready()
            if sig == "SIGHUP":
                d.wait_event("reloaded", timeout=10)
            else:
                assert "most recent call first" in d.text()
            assert d.terminate() == 0
    finally:
        d.stop()
