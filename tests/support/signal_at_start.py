"""`edge-lstm run` that gets a signal while it loads its model, before the daemon exists (on a Pi the
model takes seconds to load; `systemctl reload` or a stack dump may come meanwhile).

    python signal_at_start.py SIGNAL run --config FILE
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def main() -> int:
    sig = signal.Signals[sys.argv[1]]
    from edge_lstm import onnx_model

    load = onnx_model.load_model

    def load_model(*args: Any, **kwargs: Any) -> Any:
        print(f"TRIGGER {sig.name}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), sig)
        return load(*args, **kwargs)

    onnx_model.load_model = load_model  # cli/run.py imports it when it starts
    from edge_lstm.cli import main as edge_lstm_main

    return edge_lstm_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
