"""No single message stops the daemon (issue 20): the worker's handling of one command or one batch of
readings, with whatever it raises contained, logged, counted and answered. A message the daemon crashed
on would never be acknowledged, so the broker would redeliver it at every start: a crash loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engine import Engine
from ..pipeline import Pipeline, Processed, internal_error
from ..ports import Inbound, Link
from ..state import StateTable
from .control import Control


def run_pipeline(
    pipeline: Pipeline, engine: Engine, log: Any, batch: list[Inbound]
) -> list[tuple[list[Processed], int]]:
    """The pipeline's outcomes with the engine call (journal batch number) each was stepped in.

    If the batch raises (a bug no input should reach), its messages are stepped one by one, and the
    one that still raises is rejected `internal_error` (logged, counted, acknowledged). Each retry is its
    own engine call, so the journal replays it the same way. A result that cannot be encoded does not
    come here (the pipeline rejects that reading alone, after the engine took it). Known limit: an
    engine that raises in a later round of a batch has stored the earlier rounds, whose readings the
    retry then rejects as `duplicate`.
    """
    try:
        return [(pipeline.run(batch), pipeline.batches)]
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.error("batch_failed", size=len(batch), error=f"{type(e).__name__}: {e}"[:300])
    out: list[tuple[list[Processed], int]] = []
    for m in batch:
        try:
            out.append((pipeline.run([m]), pipeline.batches))
        except Exception as e:  # noqa: BLE001
            topic = m.topic.decode("utf-8", "replace")
            engine.stats.rejected["internal_error"] += 1
            rejection = internal_error(pipeline.input.stream_of(topic) or "", e)
            out.append(([Processed(m, topic, [], None, rejection)], pipeline.batches))
    return out


def control_replies(link: Link, control: Control, m: Inbound, qos: int) -> list[Any]:
    """Run one command (or Home Assistant status) and publish its replies; returns their handles.
    Whatever it raises is logged, counted and answered; the message is acknowledged like any other."""
    try:
        return [link.publish(t, p, qos, r, c) for t, p, r, c in control.handle(m)]
    except Exception as e:  # noqa: BLE001 - a bug in one command must not stop scoring
        try:
            return [link.publish(t, p, qos, r, c) for t, p, r, c in control.failed(m, e)]
        except Exception:  # noqa: BLE001 - even the error reply could not be queued: ack without it
            return []


def last_ts_lookup(table: StateTable) -> Callable[[str], float | None]:
    """A stream's last processed event time (None if not in the table): the clock rule's reference."""

    def last_ts_of(stream: str) -> float | None:
        slot = table.index.get(stream)  # (not `slots`: that builds the whole map)
        return None if slot is None else float(table.last_ts[slot])

    return last_ts_of
