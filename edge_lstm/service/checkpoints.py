"""When to checkpoint: every `checkpoint.interval_s`, at a moment when nothing is unacknowledged.

A checkpoint must not contain the effect of a reading the broker could still redeliver (docs/durability.md),
so when one is due the worker pauses intake until every result is acknowledged, at most
`quiesce_timeout_s`; if the broker does not take the results in that time (an outage), the checkpoint
is postponed to the next interval and serving goes on.

While the store is not durable (a full disk), a checkpoint is tried as soon as `space_back()` says there
is room (looked at every second), and at least every `retry_s`: the first one written makes the state
durable again, without a restart.
"""

from __future__ import annotations

from typing import Any

from ..ports import Clock, StateStore


class CheckpointPolicy:
    space_poll_s = 1.0  # how often a non-durable store is asked whether there is space again
    retry_s = 60.0  # and how often a checkpoint is tried anyway (free space can lie: quotas, reserved blocks)

    def __init__(
        self, store: StateStore, *, interval_s: float, quiesce_timeout_s: float, clock: Clock, log: Any
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.quiesce_timeout_s = quiesce_timeout_s
        self.clock = clock
        self.log = log
        self._quiesce_since: float | None = None
        self.last = clock.monotonic()  # the last checkpoint (or postponement)
        self.postponed = 0
        self._space_polled = self._tried = self.last

    def request(self) -> None:
        """Take a checkpoint as soon as possible (a command asked for one, or made a change that only a
        checkpoint makes durable)."""
        self.last = float("-inf")

    def pause_intake(self, unacked: int) -> bool:
        """Call every worker iteration. True while intake should pause for a due checkpoint; the
        checkpoint is taken here as soon as nothing is unacknowledged."""
        now = self.clock.monotonic()
        self.store.tick()
        if not self.store.durable and now - self._space_polled >= self.space_poll_s:
            self._space_polled = now
            if now - self._tried >= self.retry_s or (now - self._tried >= 5.0 and self.store.space_back()):
                self.request()
        if now - self.last < self.interval_s:
            return False
        if not unacked:
            self.store.checkpoint()
            self.last = self._tried = self.clock.monotonic()
            self._quiesce_since = None
            return False
        if self._quiesce_since is None:
            self._quiesce_since = now
        elif now - self._quiesce_since > self.quiesce_timeout_s:
            # The broker is not taking results (outage): keep serving, try again next interval.
            self.log.info("checkpoint_postponed", unacked=unacked, detail="results not yet taken by the broker")
            self.last = now
            self._quiesce_since = None
            self.postponed += 1
            return False
        return True
