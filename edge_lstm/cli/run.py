"""`edge-lstm run`: start the daemon in the foreground, as the systemd unit does.

A bad start (config, model, state directory) is one line on stderr and exit code 2: the unit's
`RestartPreventExitStatus=2` then stops systemd from restarting into the same error forever.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from ..contract import ModelFormatError
from ..service.config import ConfigError, load_settings
from ..service.logs import configure, get_logger


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=None,
        help="TOML configuration file (default: $EDGE_LSTM_CONFIG, else none); "
        "EDGE_LSTM_* environment variables override it",
    )


def main(args: argparse.Namespace) -> int:
    from ..durable.store import StateDirBusy
    from ..onnx_model import load_model
    from ..service.daemon import Daemon

    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"edge-lstm: {e}", file=sys.stderr)
        return 2
    configure(settings.log.level, settings.log.format)
    log = get_logger("edge_lstm.daemon")
    try:
        model = load_model(settings.model, threads=settings.engine.threads)
    except ModelFormatError as e:
        print(f"edge-lstm: model: {e}", file=sys.stderr)
        log.error("model_refused", error=str(e))
        return 2
    except ConfigError as e:  # e.g. an unreadable password file
        print(f"edge-lstm: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    daemon: Daemon | None = None

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        # Only flag it: no logging here. The handler runs in the main thread between bytecodes, maybe
        # while that thread holds structlog's (non-reentrant) output lock mid-line: logging from here
        # would deadlock the shutdown. Daemon.shutdown logs the reason.
        if daemon is not None:
            daemon.stop_reason = f"signal {signal.Signals(signum).name}"
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        daemon = Daemon(settings, model)
        return daemon.run(stop)
    except ConfigError as e:
        print(f"edge-lstm: {e}", file=sys.stderr)
        return 2
    except StateDirBusy as e:
        print(f"edge-lstm: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:
        print(f"edge-lstm: state_dir: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # `python -m edge_lstm.cli.run --config FILE` (same as `edge-lstm run`)
    _parser = argparse.ArgumentParser(prog="edge-lstm run")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
