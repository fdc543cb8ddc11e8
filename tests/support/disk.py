"""A disk port (edge_lstm/ports.py `Disk`) over the real file system that a test can fill up: while
`full`, every write, file creation and fsync fails with ENOSPC, as on an SD card with no space left,
and `free_bytes` reports none. `fsync_hook` replaces fsync (a slow or failing SD card)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from edge_lstm.durable.disk import OsDisk


class FaultyDisk(OsDisk):
    def __init__(self) -> None:
        self.full = False
        self.refused = 0  # operations failed with ENOSPC
        self.fsync_hook: Callable[[int], None] | None = None

    def _check(self, what: object) -> None:
        if self.full:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(what))

    def create(self, path: Path) -> int:
        self._check(path)
        return super().create(path)

    def open_append(self, path: Path) -> int:
        if not path.exists():
            self._check(path)
        return super().open_append(path)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        if self.full and len(data) > 1:
            super().write(fd, bytes(data[: len(data) // 2]))  # a short write, then no space: a torn tail
        self._check(fd)
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_hook is not None:
            self.fsync_hook(fd)
            return
        self._check(fd)
        super().fsync(fd)

    def free_bytes(self, directory: Path) -> int:
        return 0 if self.full else 10 << 30
