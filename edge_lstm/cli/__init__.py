"""The `edge-lstm` command line: one module per subcommand (SUBCOMMANDS).

Each subcommand lives in its own module, which provides `add_arguments(parser)` and `main(args)`;
modules keep heavy imports inside `main` so that parsing arguments stays cheap. Only the module of the
command given is imported (to add its arguments): `edge-lstm --version` and `edge-lstm --help` import
no subcommand module, hence neither onnxruntime nor paho (tests/unit/service/test_startup.py).

The help texts are the one source of README's command table (`./dev docs`, scripts/gen_docs.py); a
test fails when an option has no help or the table is stale.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

DESCRIPTION = "Streaming LSTM anomaly scoring for the edge: the daemon and its offline tools."

# name: (module, one line for `edge-lstm --help`, what the command does for its own --help)
SUBCOMMANDS = {
    "run": (
        "run",
        "run the daemon (MQTT in, scores out)",
        "The daemon: subscribes to sensor readings over MQTT and publishes scores, alarms and predictions; "
        "what the systemd unit runs. Configuration: a TOML file and EDGE_LSTM_* variables (README, "
        '"Configuration"). A bad start is one line on stderr and exit code 2.',
    ),
    "demo": (
        "demo",
        "a private broker, a simulated fleet and the daemon, with a live view",
        "Starts a private mosquitto, a simulated fleet with injected anomalies and the daemon; shows a live "
        "view and ends with a summary of what was detected.",
    ),
    "inspect": (
        "inspect",
        "print a model's contract",
        "Prints a model's contract: tensors, state, features and scaling, output, calibration (its "
        "threshold, and the one the daemon uses), provenance.",
    ),
    "replay": (
        "replay",
        "run a CSV of readings through the engine offline",
        "Runs a CSV of readings through the daemon's decoder and engine, offline, and writes one row of "
        "scores per reading; ends with a one-line summary (readings, flagged, alarms, highest score). "
        "Validates a model before deploying it.",
    ),
    "evaluate": (
        "evaluate",
        "detection quality (F1, FAR, events, delay, alarms) on labelled CSVs",
        "Runs labelled CSVs (an 'anomaly' 0/1 column) through the same engine: pointwise F1 / FAR / MAR, "
        "events flagged and alarmed, delays, false alarms per day (docs/quality.md).",
    ),
}


def build_parser(chosen: str | None = None, *, every: bool = False) -> argparse.ArgumentParser:
    """The parser, with the arguments of the `chosen` subcommand (of all of them with `every`)."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="edge-lstm", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"edge-lstm {__version__}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name, (module, help_text, description) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=description)
        if every or name == chosen:
            import_module(f".{module}", __package__).add_arguments(p)
        p.set_defaults(module_name=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top level has only value-less options, so the first other word is the command.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen).parse_args(argv)
    try:
        return int(import_module(f".{args.module_name}", __package__).main(args) or 0)
    except BrokenPipeError:
        # `edge-lstm inspect --json | head`: the reader left; not an error. Point stdout at devnull so
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
