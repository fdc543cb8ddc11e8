"""`edge-lstm run` with a thread that sends it a signal while it is idle, then keeps the GIL past the
worker's inbox timeout, as a busy thread or a loaded machine can.

    python signal_under_load.py SIGNAL GO_FILE run --config FILE

The worker idles in `inbox.get(timeout=0.1)` (service/batching.py). The signal interrupts that wait, and
the worker gets the GIL back only after its deadline: CPython before 3.13 then waits until something is
put on the queue (cli/run.py, `_wake`). The signal is sent once GO_FILE exists (the test creates it
when the daemon is serving and idle).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

HOLD_S = 0.3  # longer than the worker's 0.1 s wait, whatever the phase


def _trigger(sig: signal.Signals, go: Path) -> None:
    while not go.exists():
        time.sleep(0.05)
    print(f"TRIGGER {sig.name}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), sig)
    end = time.monotonic() + HOLD_S
    while time.monotonic() < end:  # pure Python: keeps the GIL for a whole switch interval
        pass


def main() -> int:
    sig, go = signal.Signals[sys.argv[1]], Path(sys.argv[2])
    sys.setswitchinterval(HOLD_S)  # the busy thread is not asked to hand the GIL over sooner
    threading.Thread(target=_trigger, args=(sig, go), daemon=True).start()
    from edge_lstm.cli import main as edge_lstm_main

    return edge_lstm_main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
