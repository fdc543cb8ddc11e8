"""`edge-lstm run`: start the daemon in the foreground, as the systemd unit does.

A bad start (config, model, state directory, TLS or password files) is a `StartupError`
(service/startup.py): one line on stderr naming the key and its environment variable, and exit code 2.
The unit's `RestartPreventExitStatus=2` then stops systemd from restarting into the same error forever.

SIGTERM and SIGINT stop the daemon cleanly (drain, checkpoint, `offline`); SIGHUP reloads the
configuration and the model (service/reload.py); SIGUSR1 writes every thread's stack to stderr (the
journal) and changes nothing, for a daemon that looks stuck (docs/operations.md).
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..ports import StepModel
    from ..service.config import Settings

# Signals that stop the daemon cleanly. SIGHUP reloads the configuration and the model (service/reload.py;
# its default action would kill the daemon silently).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED_SIGNALS = {*STOP_SIGNALS, signal.SIGHUP, signal.SIGUSR1}
DEFAULT_CONFIG = Path("/etc/edge-lstm/config.toml")  # where the systemd unit's ConfigurationDirectory puts it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=None,
        help=f"TOML configuration file (default: $EDGE_LSTM_CONFIG, else {DEFAULT_CONFIG} if it exists); "
        "EDGE_LSTM_* environment variables override it",
    )


def config_path(given: str | None) -> str | None:
    """--config, else $EDGE_LSTM_CONFIG, else /etc/edge-lstm/config.toml when it exists, else none."""
    if given:
        return given
    env = os.environ.get("EDGE_LSTM_CONFIG")
    if env:
        return env
    return str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None


def main(args: argparse.Namespace) -> int:
    from ..service.startup import StartupError

    try:
        return _run(args)
    except StartupError as e:
        print(f"edge-lstm: {e}", file=sys.stderr)
        return e.exit_code


def _run(args: argparse.Namespace) -> int:
    from ..service.config import load_settings
    from ..service.daemon import Daemon
    from ..service.logs import configure, get_logger
    from ..service.requested import Requested
    from ..service.startup import preflight

    stop = threading.Event()
    daemon: Daemon | None = None
    requested = Requested()  # what the signals ask for, from now on: the daemon gets this very object

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        # Only flag it: no logging here. The handler runs in the main thread between bytecodes, maybe
        # while that thread holds structlog's (non-reentrant) output lock mid-line: logging from here
        # would deadlock the shutdown. Daemon.shutdown logs the reason.
        requested.stop_reason = f"signal {signal.Signals(signum).name}"
        stop.set()
        _wake()

    def _on_hup(signum: int, frame: FrameType | None) -> None:
        requested.reload = True  # the worker reloads between two batches (service/reload.py)
        _wake()

    def _wake(*_: object) -> None:
        # Every handler ends here. A signal that interrupts the worker's wait for the inbox
        # (`SimpleQueue.get(timeout=...)`, batching.gather) can leave that wait blocked until something is
        # put, if the thread gets the GIL back after its deadline: CPython before 3.13 then waits with
        # the negative remaining time, i.e. for ever. An idle daemon (nothing put) then never saw its
        # SIGTERM (a CI hang; tests/integration/test_daemon_signals.py reproduces it). The put ends
        # that wait; `SimpleQueue.put` is reentrant, safe in a signal handler.
        if daemon is not None:
            daemon.wake()

    # Handlers first: loading the model takes seconds on a Pi, and meanwhile the default actions of
    # SIGHUP and SIGUSR1 would kill the process (a `systemctl reload` during start-up, or a stack dump
    # asked of a daemon that seems stuck starting).
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    signal.signal(signal.SIGHUP, _on_hup)
    # The stacks are written by faulthandler's C signal handler, so even when the Python threads are
    # blocked; it then chains to the Python handler, which wakes the worker as the others do.
    signal.signal(signal.SIGUSR1, _wake)
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)
    # After a restart in place (below) the signals that came during the exec are pending: handle them now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)

    settings = load_settings(config_path(args.config))
    configure(settings.log.level, settings.log.format)
    preflight(settings)
    model = _load_model(settings)
    path = config_path(args.config)

    def _reload() -> tuple[Settings, StepModel]:
        new = load_settings(path)
        preflight(new)
        return new, _load_model(new)

    if stop.is_set():  # stopped while starting: nothing received, nothing to drain
        get_logger("edge_lstm.daemon").info("stopped", reason=requested.stop_reason, detail="before serving")
        return 0
    daemon = Daemon(settings, model, reloader=_reload, requested=requested)
    _freeze_startup_objects()
    code = daemon.run(stop)
    if daemon.restart_requested and not stop.is_set():
        _restart_in_place(path, stop)
    return code


def _load_model(settings: Settings) -> StepModel:
    """The configured model; a model that does not load is a bad `model` setting (exit 2)."""
    from ..contract import ModelFormatError
    from ..onnx_model import load_model
    from ..service.startup import setting_error

    try:
        return load_model(settings.model, threads=settings.engine.threads)
    except ModelFormatError as e:
        raise setting_error("model", str(e)) from None


def _restart_in_place(path: str | None, stop: threading.Event) -> None:
    """A reload that cannot be done in place (another state signature): start over in this process
    (same pid, so systemd keeps tracking it); the restore sets the old checkpoint aside. A stop signal
    from here on stays pending through the exec, for the new process's handlers, instead of being lost
    with this process's."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    if not stop.is_set():
        os.execv(sys.executable, [sys.executable, "-m", "edge_lstm", "run", *(["--config", path] if path else [])])
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)


def _freeze_startup_objects() -> None:
    """Keep the garbage collector's full passes short: they stopped the worker for 70-90 ms at a time
    under load (p99 latency, docs/performance.md), scanning every object made at start-up (numpy,
    onnxruntime, pydantic, paho modules) that lives as long as the process. `gc.freeze` moves them out of
    its sight; what the daemon allocates per reading is freed by reference counting anyway."""
    from ..service import mqtt  # noqa: F401 - imported now so that paho's module objects are frozen too

    gc.collect()
    gc.freeze()


if __name__ == "__main__":  # `python -m edge_lstm.cli.run --config FILE` (same as `edge-lstm run`)
    _parser = argparse.ArgumentParser(prog="edge-lstm run")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
