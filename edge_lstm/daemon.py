"""`edge-lstm run`: the daemon. MQTT readings in, scores out, one worker thread doing all the work.

    paho network thread            worker (this module)
    on_message ──append──▶ inbox ──▶ gather ≤ max_batch / ≤ max_wait_ms
                                     topic → stream, decode, Engine.process (one ORT call per round)
                                     publish results (+ rejections to errors_topic)
                                     ack readings in arrival order once their results are handed over

In-process use (the demo runs it in a thread):

    d = Daemon(load_settings(), model=None)
    stop = threading.Event(); threading.Thread(target=d.run, args=(stop,)).start(); ...; stop.set()

This module must never import torch (tests/test_daemon_notorch).
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import ConfigError, Settings, load_settings
from .logs import RateLimitedLog, configure, get_logger


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", default=None,
                        help="TOML configuration file (default: $EDGE_LSTM_CONFIG, else none); "
                             "EDGE_LSTM_* environment variables override it")


@dataclass(slots=True)
class _Pending:
    """A received message waiting for its acknowledgement."""

    mid: int
    qos: int
    generation: int
    infos: list[Any] = field(default_factory=list)  # publishes that must be handed over first
    t: float = 0.0  # monotonic time it was processed
    reading: Any = None  # the Reading it stepped (journaled before the ack); None if rejected
    batch: int = 0  # the engine call it was stepped in


@dataclass
class Counters:
    received: int = 0
    published: int = 0
    acked: int = 0
    not_acked_old_connection: int = 0
    batches: int = 0
    max_outstanding: int = 0
    stalls: int = 0


class Daemon:
    """The worker: owns the engine, the decoder and the MQTT link. `run(stop)` blocks until `stop` is set."""

    idle_poll_s = 0.1  # how long the worker waits for a message when idle (stop/watchdog latency)
    drain_timeout_s = 5.0  # at shutdown: how long to wait for the broker to take the last results
    stall_warn_s = 30.0  # warn when the oldest unacked reading's result is not handed over for this long
    quiesce_timeout_s = 2.0  # how long intake may pause for a checkpoint before it is postponed

    def __init__(self, settings: Settings, model: Any = None, *, notifier: Any = None) -> None:
        from .engine import Engine
        from .model import load_model
        from .notify import Notifier
        from .reading import Decoder
        from .topics import TopicPattern

        self.settings = settings
        eng = settings.engine
        self.model = model if model is not None else load_model(settings.model, threads=eng.threads)
        # Evicted rows are either spilled (run() attaches the store) or dropped: never collected here.
        self.engine = Engine(self.model, max_streams=eng.max_streams, max_evicted=0)
        self.decoder = Decoder(self.model.meta.features, max_payload_bytes=eng.max_payload_bytes,
                               max_future_s=eng.max_future_s)
        self.input = TopicPattern(settings.mqtt.input_pattern)
        self.output = TopicPattern(settings.mqtt.output_pattern)
        # Sanitising a stream id into its output topic is per stream, not per reading: cache it for
        # as many streams as the table holds.
        self._topic_for = lru_cache(maxsize=eng.max_streams)(self.output.topic_for)
        self.notifier = notifier if notifier is not None else Notifier()
        self.log = get_logger("edge_lstm.daemon")
        self.reject_log = RateLimitedLog(self.log, burst=settings.log.rejections_burst,
                                         interval_s=settings.log.rejections_interval_s)
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.link: Any = None
        self.pending: deque[_Pending] = deque()
        self.counters = Counters()
        self.ready = threading.Event()  # set once connected and subscribed (READY=1)
        self.stop_reason = "stop requested"  # set by main()'s signal handler, logged at shutdown
        self._last_stats = time.monotonic()
        self._last_stats_results = 0
        self._last_idle_check = time.monotonic()
        self._bp_logged = 0.0
        self._holds_logged = 0
        self._stall_logged = 0.0
        self.durable: Any = None  # DurableState once run() has restored it
        self._batch_no = 0
        self._quiesce_since: float | None = None
        self._last_kick = 0.0
        self._last_ack_progress = time.monotonic()

    # ---- main loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        from .mqtt import MqttLink

        s = self.settings
        self.link = MqttLink(s.mqtt, self.inbox, self.input.subscription, max_queue=s.engine.max_queue)
        meta = self.model.meta
        self.log.info("starting", model=meta.name, model_version=meta.version,
                      features=list(meta.features), kind=meta.output.kind,
                      broker=f"{s.mqtt.host}:{s.mqtt.port}", subscription=self.input.subscription,
                      output=s.mqtt.output_pattern, status_topic=s.mqtt.status_topic,
                      max_streams=s.engine.max_streams, receive_maximum=s.mqtt.receive_maximum)
        self._open_durable()
        self.notifier.status("connecting to the broker")
        self.link.start()
        try:
            while not stop.is_set():
                self._iteration(self.idle_poll_s)
        finally:
            self._shutdown()
        return 0

    def _open_durable(self) -> None:
        from .durable import DurableState

        s = self.settings
        sha = getattr(self.model, "sha256", None)
        durable = s.checkpoint.enabled and sha is not None
        if durable:
            # Takes the state dir lock: before anything in the directory is opened, so that a second
            # daemon on it stops (StateDirBusy) without touching it (the spill store below would
            # delete the first one's spilled rows if the second serves another model).
            self.durable = DurableState(Path(s.state_dir), self.engine, sha, self.log,
                                        fsync_interval_s=s.checkpoint.fsync_interval_s)
        spill = None
        if s.engine.evicted == "spill":
            from .spill import SqliteSpill

            Path(s.state_dir).mkdir(parents=True, exist_ok=True)
            spill = SqliteSpill(Path(s.state_dir) / "spill.db", self.model.state_shapes,
                                len(self.model.meta.output.names), max_rows=s.engine.max_spilled,
                                model_sha256=getattr(self.model, "sha256", ""))
            if spill.discarded:
                self.log.warning("spill_discarded", rows=spill.discarded, reason="made for another model")
            self.engine.spill = spill
        if not durable:
            self.log.warning("durable_state_off", reason="checkpoint.enabled is false" if sha else
                             "the model has no file hash", detail="state starts fresh at every start")
            return
        self.durable.spill = spill
        self.durable.restore()

    def _iteration(self, idle_wait: float) -> None:
        if self._checkpoint_pending():
            time.sleep(0.002)  # intake paused: wait for the broker to take the last results
        else:
            batch = self._gather(idle_wait)
            if batch:
                self._process(batch)
        self._ack_ready()
        now = time.monotonic()
        if not self.ready.is_set() and self.link.subscribed:
            self.ready.set()
            self.notifier.ready(f"serving {self.input.subscription}")
        self.notifier.watchdog(now)
        self._housekeeping(now)

    def _gather(self, idle_wait: float) -> list[Any]:
        from .mqtt import WAKE

        eng = self.settings.engine
        items: list[Any] = []
        try:
            first = self.inbox.get(timeout=idle_wait)
        except queue.Empty:
            return items
        deadline = time.monotonic() + eng.max_wait_ms / 1000.0
        item = first
        while True:
            if item is WAKE:
                self.link.woken()
            else:
                items.append(item)
                if len(items) >= eng.max_batch:
                    break
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self.inbox.get(timeout=remaining)
                except queue.Empty:
                    break
        return items

    def _process(self, batch: list[Any]) -> None:
        from .reading import Rejection
        from .result import encode

        c = self.counters
        c.batches += 1
        c.received += len(batch)
        decoded: list[Any] = []
        topics: list[str] = []
        for m in batch:
            try:
                topic = m.topic.decode("utf-8")
            except UnicodeDecodeError:
                topic = m.topic.decode("utf-8", "replace")
                decoded.append(Rejection("", "bad_stream", "topic is not valid UTF-8"))
                topics.append(topic)
                continue
            topics.append(topic)
            stream = self.input.stream_of(topic)
            if stream is None:
                decoded.append(Rejection("", "bad_stream",
                                         f"topic does not match {self.settings.mqtt.input_pattern!r}"))
                continue
            decoded.append(self.decoder.decode(stream, m.payload, m.arrival))
        outcomes = self.engine.process(decoded)
        self._batch_no += 1
        batch_no = self._batch_no

        mq = self.settings.mqtt
        link = self.link
        errors_topic = mq.errors_topic
        now = time.monotonic()
        for m, topic, reading, out in zip(batch, topics, decoded, outcomes):
            p = _Pending(m.mid, m.qos, m.generation, t=now)
            if isinstance(out, Rejection):
                self.reject_log(out.reason, stream=out.stream[:200], topic=topic[:200], detail=out.detail[:200])
                if errors_topic:
                    doc = {"stream": out.stream, "reason": out.reason, "detail": out.detail, "topic": topic}
                    p.infos.append(link.publish(errors_topic, json.dumps(doc).encode(), mq.qos_out))
            else:
                p.infos.append(link.publish(self._topic_for(out.stream), encode(out), mq.qos_out))
                p.reading, p.batch = reading, batch_no
                c.published += 1
            self.pending.append(p)
        c.max_outstanding = max(c.max_outstanding, len(self.pending))

    def _ack_ready(self) -> None:
        """Acknowledge, in arrival order, every reading whose publishes the broker has taken.

        The stepped readings among them are journaled first: once a reading is acknowledged the broker
        forgets it, so from then on only the journal can bring its step back after a crash.
        """
        from .mqtt import is_handed_over

        pending = self.pending
        ready: list[_Pending] = []
        while pending and all(is_handed_over(i) for i in pending[0].infos):
            ready.append(pending.popleft())
        if not ready:
            return
        self._last_ack_progress = time.monotonic()
        if self.durable is not None:
            self.durable.record((p.batch, p.reading) for p in ready if p.reading is not None)
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

    def _checkpoint_pending(self) -> bool:
        """True while intake is paused for a due checkpoint (taken as soon as nothing is unacked)."""
        d = self.durable
        if d is None:
            return False
        now = time.monotonic()
        if now - d.last_checkpoint < self.settings.checkpoint.interval_s:
            return False
        if not self.pending:
            d.checkpoint()
            self._quiesce_since = None
            return False
        if self._quiesce_since is None:
            self._quiesce_since = now
        elif now - self._quiesce_since > self.quiesce_timeout_s:
            # The broker is not taking results (outage): keep serving, try again next interval.
            self.log.info("checkpoint_postponed", unacked=len(self.pending),
                          detail="results not yet taken by the broker")
            d.last_checkpoint = now
            self._quiesce_since = None
            return False
        return True

    def _housekeeping(self, now: float) -> None:
        s = self.settings
        if s.engine.idle_timeout_s and now - self._last_idle_check > min(10.0, s.engine.idle_timeout_s):
            self._last_idle_check = now
            self.engine.evict_idle(time.time() - s.engine.idle_timeout_s)
        self.reject_log.flush()
        holds = self.link.holds
        if holds > self._holds_logged and now - self._bp_logged > 10.0:
            self._bp_logged, self._holds_logged = now, holds
            self.log.warning("backpressure", holds=holds, held_s=round(self.link.held_s, 1),
                             max_queue=self.settings.engine.max_queue, queue=self.inbox.qsize(),
                             detail="the worker is behind: reading from the broker paused until it catches up")
        if self.pending and self.link.connected:
            if now - self._last_kick >= 5.0:
                # Re-send results paho left unsent while connected (mqtt.py, MqttLink.kick).
                self._last_kick = now
                self.link.kick(min_age_s=5.0)
            # A stall is no progress, not a long backlog: acks still flowing means the broker is slow.
            idle = now - max(self.pending[0].t, self._last_ack_progress)
            if idle > self.stall_warn_s and now - self._stall_logged > self.stall_warn_s:
                self._stall_logged = now
                self.counters.stalls += 1
                self.log.warning("publish_stalled", unacked=len(self.pending), no_progress_s=round(idle, 1),
                                 detail="results are not being acknowledged by the broker while connected")
        if s.log.stats_interval_s and now - self._last_stats >= s.log.stats_interval_s:
            self.log_stats(now)

    def stats(self) -> dict[str, Any]:
        st = self.engine.stats
        return {
            "received": self.counters.received,
            "readings": st.readings,
            "results": st.results,
            "anomalies": st.anomalies,
            "rejected": dict(st.rejected),
            "streams": len(self.engine.table),
            "evicted": st.evicted,
            "queue": self.inbox.qsize(),
            "unacked": len(self.pending),
            "acked": self.counters.acked,
            "backpressure_events": self.link.holds if self.link else 0,
            "max_queue_seen": self.link.max_inbox if self.link else 0,
            "max_outstanding": self.counters.max_outstanding,
            "stalls": self.counters.stalls,
            "publish_refused": self.link.publish_failures if self.link else 0,
            "model_calls": st.model_calls,
            "connected": bool(self.link and self.link.connected),
            "reconnects": max(0, (self.link.connects if self.link else 0) - 1),
        }

    def log_stats(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        st = self.stats()
        dt = max(now - self._last_stats, 1e-9)
        rate = (st["results"] - self._last_stats_results) / dt
        self._last_stats, self._last_stats_results = now, st["results"]
        self.log.info("stats", rate_per_s=round(rate, 1), **st)
        self.notifier.status(f"{st['results']} results, {st['streams']} streams, {rate:.0f}/s, "
                             f"{'connected' if st['connected'] else 'disconnected'}")

    # ---- shutdown -------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        from .mqtt import WAKE

        self.notifier.stopping("draining")
        self.log.info("stopping", reason=self.stop_reason, queued=self.inbox.qsize(), unacked=len(self.pending))
        link = self.link
        link.stop_accepting()
        # Drain what was received before the stop: everything now in the inbox.
        while True:
            batch: list[Any] = []
            try:
                while len(batch) < self.settings.engine.max_batch:
                    item = self.inbox.get_nowait()
                    if item is not WAKE:
                        batch.append(item)
            except queue.Empty:
                pass
            if not batch:
                break
            self._process(batch)
            self._ack_ready()
        deadline = time.monotonic() + self.drain_timeout_s
        while self.pending and link.connected and time.monotonic() < deadline:
            self._ack_ready()
            if self.pending:
                time.sleep(0.005)
        self._ack_ready()
        if self.pending:
            self.log.warning("shutdown_unacked", count=len(self.pending),
                             detail="the broker redelivers these readings to the next session")
        self.reject_log.flush(force=True)
        if self.durable is not None:
            # With results still unacked the state is ahead of checkpoint + journal; the broker
            # redelivers those readings, so the journal alone is the right record.
            self.durable.close(final_checkpoint=not self.pending)
        if self.engine.spill is not None:
            self.engine.spill.close()
        self.log_stats()
        offline = link.close(timeout=self.drain_timeout_s)
        self.log.info("stopped", offline_published=offline)
        self.notifier.close()


def main(args: argparse.Namespace) -> int:
    from .contract import ModelFormatError
    from .durable import StateDirBusy

    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        print(f"edge-lstm: {e}", file=sys.stderr)
        return 2
    configure(settings.log.level, settings.log.format)
    log = get_logger("edge_lstm.daemon")
    try:
        from .model import load_model

        model = load_model(settings.model, threads=settings.engine.threads)
    except ModelFormatError as e:
        print(f"edge-lstm: model: {e}", file=sys.stderr)
        log.error("model_refused", error=str(e))
        return 2
    except ConfigError as e:  # e.g. an unreadable password file
        print(f"edge-lstm: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    daemon: Daemon | None = None

    def _on_signal(signum: int, frame: Any) -> None:
        # Only flag it: no logging here. The handler runs in the main thread between bytecodes, maybe
        # while that thread holds structlog's (non-reentrant) output lock mid-line: logging from here
        # would deadlock the shutdown. _shutdown logs the reason.
        if daemon is not None:
            daemon.stop_reason = f"signal {signal.Signals(signum).name}"
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        daemon = Daemon(settings, model)
        return daemon.run(stop)
    except ConfigError as e:
        print(f"edge-lstm: {e}", file=sys.stderr)
        return 2
    except StateDirBusy as e:
        print(f"edge-lstm: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:
        print(f"edge-lstm: state_dir: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # `python -m edge_lstm.daemon --config FILE` (same as `edge-lstm run`)
    _parser = argparse.ArgumentParser(prog="edge-lstm run")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
