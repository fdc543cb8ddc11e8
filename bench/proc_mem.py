"""Memory of a process from /proc (Linux): RSS and its peak, a child's private memory, the two together
sampled while something runs (bench/footprint.py)."""

from __future__ import annotations

import threading


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def private_kb(pid: int) -> int:
    """Memory only this process holds (Private_Clean + Private_Dirty; 0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean:", "Private_Dirty:")))
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class TotalPeak(threading.Thread):
    """The daemon's RSS plus its children's private memory (a checkpoint writer's copy-on-write pages
    and its own buffers), sampled every 20 ms: the memory a cgroup (`MemoryMax`) is charged."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.child_peak, self.done = pid, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            try:
                own = rss_kb(self.pid)
            except (OSError, RuntimeError):
                return
            kids = sum(private_kb(c) for c in children(self.pid))
            self.peak, self.child_peak = max(self.peak, own + kids), max(self.child_peak, kids)
