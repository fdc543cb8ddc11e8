"""`edge-lstm` command line: run | demo | inspect | replay.

Each subcommand lives in its own module, which provides `add_arguments(parser)` and `main(args)`;
modules keep heavy imports inside `main` so that parsing arguments stays cheap. Only the module of the
command given is imported (to add its arguments): `edge-lstm --version` and `edge-lstm --help` import
no subcommand module, hence neither onnxruntime nor paho (tests/unit/test_startup.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

SUBCOMMANDS = {
    "run": ("run", "run the daemon (MQTT in, scores out)"),
    "demo": ("demo", "a private broker, a simulated fleet and the daemon, with a live view"),
    "inspect": ("inspect", "print a model's contract"),
    "replay": ("replay", "run a CSV of readings through the engine offline"),
    "evaluate": ("evaluate", "detection quality (F1, FAR, events, delay, alarms) on labelled CSVs"),
}


def main(argv: list[str] | None = None) -> int:
    from .. import __version__

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="edge-lstm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edge-lstm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The top level has only value-less options, so the first other word is the command.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            import_module(f".{module}", __package__).add_arguments(p)
        p.set_defaults(module_name=module)
    args = parser.parse_args(argv)
    try:
        return int(import_module(f".{args.module_name}", __package__).main(args) or 0)
    except BrokenPipeError:
        # `edge-lstm inspect --json | head`: the reader left; not an error. Point stdout at devnull so
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
