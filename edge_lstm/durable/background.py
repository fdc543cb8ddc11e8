"""A checkpoint written by a forked child from a copy-on-write snapshot of the table (issue 22).

Writing 100,000 streams takes about a second (write, fsync, read-back check); done by the worker it
stalls every result that long. `os.fork` at the quiet moment the checkpoint is due gives the child the
table as it is then (the kernel copies a page only when the parent writes it): the child writes and
verifies the file and exits; the worker serves on at once and `Background.poll` collects the outcome.
The journal segment was rotated before the fork, so until the child succeeds the previous generation
plus the journal still cover the state (a crash meanwhile restarts from them, as before).

The snapshot costs the pages the worker writes while the child still holds them (a reading dirties its
row in every column: a few hundred readings over streams spread through the table touch most pages).
The child therefore lets go of each array's pages as soon as the array is in the file
(`release_pages`, `madvise(MADV_DONTNEED)` on its whole pages): from then on the worker writes those
pages in place again, and the fsync and the read-back check cost no copies.

The child blocks SIGTERM / SIGINT (a `systemctl stop` signals the whole cgroup: the daemon waits for
the child, then writes its final checkpoint), touches nothing but the table and the file, and leaves
with `os._exit` (no atexit handlers, no buffered output of the parent flushed twice).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import checkpoint

_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None


_madvise = _libc()


def release_pages(a: np.ndarray) -> None:
    """In the forked child: drop its copy of the whole pages of `a`'s buffer, which it never reads
    again (the parent's pages are untouched; a page shared with the parent is then the parent's
    alone). Pages `a` shares with other objects at either end are kept."""
    if _madvise is None or not a.flags.c_contiguous:
        return
    start = a.ctypes.data
    lo, hi = -(-start // _PAGE) * _PAGE, (start + a.nbytes) // _PAGE * _PAGE
    if hi > lo:
        _madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_DONTNEED)


@dataclass
class Background:
    pid: int
    fd: int  # read end of the pipe the child reports on
    started: float  # monotonic time the checkpoint was begun (for its log line)
    path: Any  # the checkpoint's file
    failures: int = 0  # the store's count of refused writes when it began

    @classmethod
    def start(cls, write: Callable[[], int], path: Any, started: float) -> Background:
        """Fork; the child runs `write` (returns the file size) and reports the outcome."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (its outcome is what the tests check)
            code = 0
            try:
                os.close(r)
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
                try:
                    msg: dict[str, Any] = {"size": write()}
                except checkpoint.CheckpointRefused as e:
                    msg = {"refused": [e.reason, e.detail]}
                except OSError as e:
                    msg = {"oserror": [e.errno, e.strerror or str(e)]}
                os.write(w, json.dumps(msg).encode())
            except BaseException:  # noqa: BLE001 - nothing may escape into the parent's code
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        return cls(pid, r, started, path)

    def poll(self, *, wait: bool = False) -> int | BaseException | None:
        """None while the child runs; then the file size, or the error it met (`CheckpointRefused`,
        `OSError`, or a `RuntimeError` if it died without a word)."""
        pid, status = os.waitpid(self.pid, 0 if wait else os.WNOHANG)
        if pid == 0:
            return None
        try:
            raw = os.read(self.fd, 65536)
        finally:
            os.close(self.fd)
        try:
            msg = json.loads(raw)
        except ValueError:
            return RuntimeError(f"checkpoint writer exited with status {status} and no report")
        if "size" in msg:
            return int(msg["size"])
        if "refused" in msg:
            return checkpoint.CheckpointRefused(*msg["refused"])
        err, text = msg["oserror"]
        return OSError(err, text)
