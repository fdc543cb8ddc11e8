"""`edge-lstm run`: the daemon. MQTT readings in, scores out, one worker thread doing all the work.

    link's network thread          worker (this module)
    on_message ──append──▶ inbox ──▶ gather: target_batch readings or max_wait_ms (batching.py)
                                     Pipeline.run: topic → stream, decode, Engine.process, encode
                                     publish results (+ rejections to errors_topic)
                                     ack readings in arrival order once their results are handed over
                                     (AckLedger), journaling them first (StateStore)

The daemon wires its parts and runs the loop; the parts have one job each: `pipeline.Pipeline` (pure),
`acks.AckLedger`, `checkpoints.CheckpointPolicy`, `housekeeping.Housekeeping`. The broker, the disk and
the clock come in through ports (edge_lstm/ports.py), so tests drive the daemon with a fake link
(tests/support/fakes.py). Signals and exit codes are the CLI's (cli/run.py).

In-process use (the demo runs it in a thread): `d = Daemon(load_settings())`, `d.run(stop)` in a thread,
`stop.set()` to end it. This module must never import torch (tests/integration/test_daemon_inprocess.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from ..alarm import table_columns
from ..engine import Engine
from ..hints import hint
from ..onnx_model import load_model
from ..pipeline import Pipeline, Processed
from ..ports import WAKE, Clock, Disk, Inbound, Inbox, Link, SpillStore, StateStore, StepModel, SystemClock
from ..scoring import Scorer
from ..topics import TopicPattern
from .acks import AckLedger, Pending
from .batching import Pace, gather
from .checkpoints import CheckpointPolicy
from .clocks import ArrivalStamps, decoder_for
from .config import MqttSettings, Settings, cleartext_password
from .contain import control_replies, run_pipeline
from .control import Control
from .housekeeping import Housekeeping
from .logs import RateLimitedLog, get_logger
from .notify import Notifier, Notify
from .reload import reload
from .requested import Requested
from .retained import republish
from .state import open_durable, open_state_dir
from .stats import Counters, StatsReporter, collect

LinkFactory = Callable[[MqttSettings, Inbox[Any], Any, int], Link]  # subscription: a filter or a list


def mqtt_link(cfg: MqttSettings, inbox: Inbox[Any], subscription: Any, max_queue: int) -> Link:
    from .mqtt import MqttLink  # paho is imported only when a real link is made

    return MqttLink(cfg, inbox, subscription, max_queue=max_queue)


class Daemon:
    """The worker: owns the engine, the pipeline and the link. `run(stop)` blocks until `stop` is set."""

    idle_poll_s = 0.1  # how long the worker waits for a message when idle (stop/watchdog latency)
    hard_unacked = 30_000  # readings awaiting PUBACKs, at most: results + alarms within 65,535 packet ids
    drain_timeout_s = 5.0  # at shutdown: how long to wait for the broker to take the last results
    quiesce_timeout_s = 2.0  # how long intake may pause for a checkpoint before it is postponed

    def __init__(
        self,
        settings: Settings,
        model: StepModel | None = None,
        *,
        notifier: Notify | None = None,
        link_factory: LinkFactory = mqtt_link,
        clock: Clock | None = None,
        reloader: Callable[[], tuple[Settings, StepModel]] | None = None,
        requested: Requested | None = None,
        disk: Disk | None = None,
    ) -> None:
        """`reloader`: reads the configuration and model again (SIGHUP, `reload`); `requested`: the stop and
        reload requests, shared with the CLI's signal handlers; `disk`: the state dir's."""
        self.settings = settings
        self.reloader = reloader
        self.requested = requested if requested is not None else Requested()
        self.restart_requested = False  # a reload that cannot be done in place: the CLI re-executes
        eng = settings.engine
        self.model: StepModel = model if model is not None else load_model(settings.model, threads=eng.threads)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stamps = ArrivalStamps(self.clock)
        self.log = get_logger("edge_lstm.daemon")
        # The state dir: its lock, then the spill store (with the engine's columns), then the engine with it
        # (evicted rows are spilled or dropped, never collected), then the durable state on it, restored.
        scoring, mono = settings.scoring.config(), self.clock.monotonic
        columns = table_columns(Scorer(self.model.meta, scoring).columns)  # the engine's, before the engine
        state = open_state_dir(settings, self.model, columns, self.log, mono)
        self.spill: SpillStore | None = state.spill
        self.engine = Engine(
            self.model,
            max_streams=eng.max_streams,
            max_evicted=0,
            spill=state.spill,
            scoring=scoring,
            alarms=settings.alarm.policy(),
        )
        self.durable: StateStore | None = open_durable(settings, state, self.engine, self.log, disk, mono)
        self.checkpoints: CheckpointPolicy | None = None
        if self.durable is not None:
            self.checkpoints = CheckpointPolicy(
                self.durable,
                interval_s=settings.checkpoint.interval_s,
                quiesce_timeout_s=self.quiesce_timeout_s,
                clock=self.clock,
                log=self.log,
            )
        self.input = TopicPattern(settings.mqtt.input_pattern)
        decoder = decoder_for(self.model.meta.features, eng, self.engine.table)
        self.pipeline = Pipeline(
            self.engine,
            decoder,
            self.input,
            TopicPattern(settings.mqtt.output_pattern),
            errors_topic=settings.mqtt.errors_topic,
            alarm_pattern=TopicPattern(settings.mqtt.alarm_pattern) if settings.mqtt.alarm_pattern else None,
        )
        self.notifier: Notify = notifier if notifier is not None else Notifier()
        self.control = Control(settings, self.engine, self.log, self._request_reload, self._request_checkpoint)
        self.reject_log = RateLimitedLog(
            self.log,
            burst=settings.log.rejections_burst,
            interval_s=settings.log.rejections_interval_s,
            clock=self.clock.monotonic,
        )
        self.inbox: Inbox[Any] = queue.SimpleQueue()
        self._link_factory = link_factory
        self.started_link: Link | None = None  # made by start(); None before (the stats say so)
        self.ledger = AckLedger()
        self.counters = Counters()
        self.ready = threading.Event()  # set once connected and subscribed (READY=1)
        self.housekeeping: Housekeeping | None = None
        self.reporter = StatsReporter(self)
        # Backpressure on results: paho's own window is off (mqtt.py), so intake stops while this many
        # readings wait for their results' PUBACKs; the inbox then fills and the network thread holds.
        self.max_unacked = eng.max_queue + settings.mqtt.max_inflight
        self.pace = Pace(self.clock, eng.batch_cpu_percent)  # the batch window (batching.py)
        self.unacked_pauses = 0
        self._retained_generation = -1  # the connection the retained state was last published on

    def wake(self) -> None:
        """Wake the worker if it waits for the inbox (it then looks at stop and reload requests); safe
        from a signal handler (cli/run.py says why it is needed)."""
        self.inbox.put(WAKE)

    def _request_reload(self) -> None:
        self.requested.reload = True

    def _request_checkpoint(self) -> bool:
        if self.checkpoints is not None:  # None: durable state is off
            self.checkpoints.request()
        return self.checkpoints is not None

    @property
    def link(self) -> Link:
        if self.started_link is None:
            raise RuntimeError("the daemon has no link before run()")
        return self.started_link

    # ---- main loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        self.start()
        try:
            while not stop.is_set() and not self.restart_requested:
                self.iteration(self.idle_poll_s)
        finally:
            self.shutdown()
        return 0

    def start(self) -> None:
        """Open durable state, create the link and start connecting (run() calls it)."""
        s = self.settings
        subscription: Any = (
            [self.input.subscription, *self.control.topics] if self.control.topics else (self.input.subscription)
        )
        link = self.started_link = self._link_factory(s.mqtt, self.inbox, subscription, s.engine.max_queue)
        meta = self.model.meta
        self.log.info(
            "starting",
            model=meta.name,
            model_version=meta.version,
            features=list(meta.features),
            kind=meta.output.kind,
            broker=f"{s.mqtt.host}:{s.mqtt.port}",
            subscription=self.input.subscription,
            output=s.mqtt.output_pattern,
            status_topic=s.mqtt.status_topic,
            max_streams=s.engine.max_streams,
            receive_maximum=s.mqtt.receive_maximum,
        )
        self.housekeeping = Housekeeping(
            s, self.engine, link, self.ledger, self.inbox, self.reject_log, self.log, self.clock, self.log_stats
        )
        if cleartext_password(s.mqtt):
            self.log.warning(
                "password_in_clear",
                host=s.mqtt.host,
                detail="the MQTT password goes over plain TCP to a non-loopback broker: enable mqtt.tls",
            )
        self.reporter.serve_metrics()
        self.notifier.status("connecting to the broker")
        link.start()

    def iteration(self, idle_wait: float) -> None:
        """One worker cycle: take a batch (unless a checkpoint pauses intake), process it, ack what is
        ready, then readiness, watchdog and housekeeping."""
        if self.requested.reload:
            self.requested.reload = False
            reload(self)
        link = self.link
        if link.connected and link.generation != self._retained_generation:
            # No session kept: a broker restarted without persistence forgot the retained alarms too; publish
            # the raised ones before this batch (with a kept session, in-flight ones are resent: no double).
            self._retained_generation = link.generation
            if not link.session_present:
                republish(link, self.engine, self.pipeline.alarm_pattern, self.settings.mqtt.qos_out)
        if self.checkpoints is not None and self.checkpoints.pause_intake(len(self.ledger)):
            link.intake_paused = True  # the network thread must not hold now: only it reads PUBACKs
            self.clock.sleep(0.002)  # intake paused: wait for the broker to take the last results
        elif self._unacked_pause():
            link.intake_paused = True
            self.unacked_pauses += 1
            self.clock.sleep(0.002)  # too many results unacknowledged by the broker: wait for PUBACKs
        else:
            link.intake_paused = False
            batch = self._gather(idle_wait)
            if batch:
                self.pace.started()
                self._process(batch)
        self._ack_ready()
        self.pace.finished()
        now = self.clock.monotonic()
        if not self.ready.is_set() and self.link.subscribed:
            self.ready.set()
            self.notifier.ready(f"serving {self.input.subscription}")
        self.notifier.watchdog(now)
        assert self.housekeeping is not None
        self.housekeeping.run(now)
        if self.control.ha is not None:  # Home Assistant: configs per connection, held-back states (ha_bridge.py)
            self.control.ha.tick(now, link, self.engine, self.housekeeping.take_idle_evicted(), self.log_stats)

    def _unacked_pause(self) -> bool:
        """Pause intake at `max_unacked` while PUBACKs flow, at `hard_unacked` always (performance.md, round 7)."""
        self.link.read_on = (n := len(self.ledger)) >= self.hard_unacked  # its PUBACKs: behind readings
        return self.link.read_on or (n >= self.max_unacked and self.housekeeping.acks_flowing())  # type: ignore[union-attr]

    def _gather(self, idle_wait: float) -> list[Inbound]:
        eng = self.settings.engine
        return gather(
            self.inbox,
            self.link.woken,
            self.clock,
            idle_wait=idle_wait,
            max_batch=eng.max_batch,
            target_batch=eng.target_batch,
            max_wait_s=eng.max_wait_ms / 1000.0,
            not_before=self.pace.next_at,
            bell=self.link.doorbell,  # MqttLink rings it as readings arrive
            hold_s=min(self.pace.window, eng.max_wait_ms / 1000.0),  # the next batch's window, as the last
        )

    def _process(self, batch: list[Inbound]) -> None:
        c = self.counters
        c.received += len(batch)
        self.stamps.adjust(batch)  # arrival stamps that never go backwards (a wall-clock step)
        if self.control.topics:
            batch = self._control(batch)
        now = self.clock.monotonic()
        with self.link.batch():
            for processed, batch_no in run_pipeline(self.pipeline, self.engine, self.log, batch):
                self._publish(processed, batch_no, now)
            self._ack_ready(batched=True)  # acks ready by now: in the same wake-up of the network thread
        self.ledger.note_size()

    def _control(self, batch: list[Inbound]) -> list[Inbound]:
        """Handle the messages on the daemon's own topics (replies acknowledged like results); return
        the readings."""
        readings = []
        qos, now, link = self.settings.mqtt.qos_out, self.clock.monotonic(), self.link
        for m in batch:
            if not self.control.handles(m.topic):
                readings.append(m)
                continue
            self.ledger.add(Pending(m.mid, m.qos, m.generation, now, control_replies(link, self.control, m, qos)))
        return readings

    def _publish(self, processed: list[Processed], batch_no: int, now: float) -> None:
        c = self.counters
        qos = self.settings.mqtt.qos_out
        publish, ledger, reject_log = self.link.publish, self.ledger, self.reject_log
        for p in processed:
            m = p.message
            r = p.rejection
            # A rejection is published on the errors topic only when it is also logged in full (one rate limit).
            shown = r is None or reject_log(
                r.reason, stream=r.stream[:200], topic=p.topic[:200], detail=r.detail[:200], hint=hint(r.reason)
            )
            handles = [publish(t, payload, qos, retain) for t, payload, retain in p.publishes] if shown else []
            entry = Pending(m.mid, m.qos, m.generation, now, handles)
            if p.reading is not None:  # stepped (a result that could not be encoded too): journaled
                entry.reading, entry.batch = p.reading, batch_no
            if r is None:
                c.published += 1
                if self.control.ha is not None and p.result is not None:  # configs, then state (ha_bridge.py)
                    entry.handles += [publish(t, b, qos, rt) for t, b, rt in self.control.ha.on_result(p.result, now)]
            ledger.add(entry)

    def _ack_ready(self, batched: bool = False) -> None:
        """Acknowledge, in arrival order, every reading whose publishes the broker has taken.

        The stepped readings among them are journaled first: once a reading is acknowledged the broker
        forgets it, so from then on only the journal can bring its step back after a crash.
        """
        link = self.link
        ready = self.ledger.take_ready(link.handed_over)
        if not ready:
            return
        if self.housekeeping is not None:
            self.housekeeping.acked(self.clock.monotonic())
        if self.durable is not None:
            self.durable.record((p.batch, p.reading) for p in ready if p.reading is not None)
        with nullcontext() if batched else self.link.batch():  # batched: inside the caller's `link.batch()`
            self._ack(ready)

    def _ack(self, ready: list[Pending]) -> None:
        link = self.link
        gen = link.generation
        c = self.counters
        for p in ready:
            if p.qos == 0:
                continue
            if p.generation == gen:
                link.ack(p.mid, p.qos)
                c.acked += 1
            else:
                # Received on an earlier connection: the broker redelivers it on this one (same session),
                # and that copy is acked; acking the old packet id could ack a different message.
                c.not_acked_old_connection += 1

    # ---- stats ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return collect(self)

    def log_stats(self, now: float | None = None) -> None:
        self.reporter.report(self.clock.monotonic() if now is None else now)

    # ---- shutdown -------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.notifier.stopping("draining")
        reason = self.requested.stop_reason
        self.log.info("stopping", reason=reason, queued=self.inbox.qsize(), unacked=len(self.ledger))
        (link := self.link).stop_accepting()
        # Drain what was received before the stop: everything now in the inbox.
        while True:
            batch: list[Inbound] = []
            try:
                while len(batch) < self.settings.engine.max_batch:
                    item = self.inbox.get_nowait()
                    if item is not WAKE:
                        batch.append(item)
            except queue.Empty:
                pass
            if not batch:
                break
            self._process(batch)  # and acks what is ready
        deadline = self.clock.monotonic() + self.drain_timeout_s
        while self.ledger and link.connected and self.clock.monotonic() < deadline:
            self._ack_ready()
            if self.ledger:
                self.clock.sleep(0.005)
        self._ack_ready()
        if self.ledger:
            self.log.warning(
                "shutdown_unacked",
                count=len(self.ledger),
                detail="the broker redelivers these readings to the next session",
            )
        self.reject_log.flush(force=True)
        if self.durable is not None:
            # With results still unacked the state is ahead of checkpoint + journal; the broker
            # redelivers those readings, so the journal alone is the right record.
            self.durable.close(final_checkpoint=not self.ledger)
        if self.spill is not None:
            self.spill.close()
        self.log_stats()
        offline = link.close(timeout=self.drain_timeout_s)
        self.reporter.close()
        self.log.info("stopped", offline_published=offline)
        self.notifier.close()
