"""What the operator asked of the worker: to stop (and why), to reload.

Set by the CLI's signal handlers (cli/run.py), from the moment they are installed, before the daemon
exists too: the same object is then handed to the daemon at construction, so a signal that came during
start-up is not lost and nothing is copied onto the daemon afterwards. Set also by the `reload` command
(service/control.py). The worker acts on them between two batches. Plain attribute writes only: safe in
a signal handler.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Requested:
    stop_reason: str = "stop requested"  # logged at shutdown
    reload: bool = False  # read the configuration and the model again (service/reload.py)
