"""Messages on the daemon's own topics, not readings: commands (`[commands]`) and Home Assistant's
status (`[homeassistant]`); and the discovery announcements of streams. Both opt-in, off by default.

The daemon routes a received message here when its topic is one of `topics`, before the pipeline; what
`handle` returns is published like a result (the command is acknowledged once its reply is handed over).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engine import Engine
from ..ports import Inbound
from ..result import encode_alarm
from ..topics import TopicPattern
from .commands import CommandError, parse, reply, response_topic_problem
from .config import Settings
from .ha_bridge import HomeAssistantBridge

Publish = tuple[str, bytes, bool]  # topic, payload, retain
Reply = tuple[str, bytes, bool, bytes | None]  # ... and the MQTT v5 correlation data of a command's reply


class Control:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        log: Any,
        request_reload: Callable[[], None],
        request_checkpoint: Callable[[], bool],
    ) -> None:
        """`request_checkpoint`: asks for a checkpoint as soon as possible; False when durable state is
        off."""
        self.settings = settings
        self.request_reload = request_reload  # as SIGHUP: the worker reloads before its next batch
        self.request_checkpoint = request_checkpoint
        self.engine = engine
        self.log = log
        c, ha, mq = settings.commands, settings.homeassistant, settings.mqtt
        self.command_topic = c.topic if c.enabled else None
        self.reply_topic = f"{c.topic}/reply"
        self.ha_status = f"{ha.discovery_prefix}/status" if ha.enabled else None
        self.ha = HomeAssistantBridge(settings, engine.meta, engine.table.max_streams) if ha.enabled else None
        self.topics = [t for t in (self.command_topic, self.ha_status) if t]
        self._alarms = TopicPattern(mq.alarm_pattern) if mq.alarm_pattern else None
        self.commands = 0
        self._side_effects: list[Publish] = []  # what a command publishes besides its reply (`remove`)
        self.command_errors = 0  # commands refused or failed (bad JSON, bad Response Topic, an exception)
        self._own_topics = [t for t in (mq.status_topic, mq.stats_topic, mq.errors_topic, c.topic, self.ha_status) if t]
        own = [TopicPattern(mq.input_pattern), TopicPattern(mq.output_pattern), self._alarms]
        own.append(TopicPattern(ha.state_pattern) if ha.enabled else None)  # retained HA states
        self._own_patterns = [p.stream_of for p in own if p is not None]

    def handles(self, topic: bytes) -> bool:
        return bool(self.topics) and topic.decode("utf-8", "replace") in self.topics

    def handle(self, m: Inbound) -> list[Reply]:
        t = m.topic.decode("utf-8", "replace")
        if t == self.ha_status:
            if m.payload.strip() == b"online" and self.ha is not None:  # HA restarted: it forgot the configs
                return [(*a, None) for a in self.ha.on_online(list(self.engine.table.slots))]
            return []
        # MQTT v5 request/response: the requester's response topic and correlation data; else <topic>/reply.
        self.commands += 1
        if m.response_topic is not None:
            problem = self.response_topic_problem(m.response_topic)
            if problem is not None:
                return [(self.reply_topic, self._refused(problem), False, m.correlation)]
        self._side_effects = []
        answer = (m.response_topic or self.reply_topic, self._command(m.payload), False, m.correlation)
        return [answer, *((*a, None) for a in self._side_effects)]

    def response_topic_problem(self, topic: str) -> str | None:
        return response_topic_problem(
            topic,
            own_topics=self._own_topics,
            own_patterns=self._own_patterns,
            forbidden_prefixes=[self.settings.homeassistant.discovery_prefix],
            allowed_prefix=self.settings.commands.response_prefix,
        )

    def failed(self, m: Inbound, error: BaseException) -> list[Reply]:
        """The reply to a command whose handling raised (a bug, never a reason to stop the daemon)."""
        detail = f"{type(error).__name__}: {error}"[:300]
        self.log.error("command_failed", topic=m.topic[:200].decode("utf-8", "replace"), error=detail)
        self.command_errors += 1
        if not self.command_topic or m.topic.decode("utf-8", "replace") != self.command_topic:
            return []
        return [(self.reply_topic, reply(None, False, error=f"internal error: {detail}"), False, None)]

    def _refused(self, error: str) -> bytes:
        self.log.warning("command_refused", error=error)
        self.command_errors += 1
        return reply(None, False, error=error)

    def _command(self, payload: bytes) -> bytes:
        try:
            cmd = parse(payload)
        except CommandError as e:
            return self._refused(str(e))
        self.log.info("command", op=cmd.op, stream=cmd.stream)
        if cmd.op == "inspect":
            assert cmd.stream is not None
            info = self.engine.describe_stream(cmd.stream)
            if info is None:
                return reply("inspect", False, stream=cmd.stream, error="no such stream in the state table")
            return reply("inspect", True, **info)
        if cmd.op in ("reset", "remove"):
            assert cmd.stream is not None
            known = self.engine.reset_stream(cmd.stream)
            self.request_checkpoint()  # the reset is durable once the next checkpoint is written
            if cmd.op == "remove":  # nothing of it stays retained; Home Assistant deletes its device
                alarm = [(self._alarms.topic_for(cmd.stream), b"", True)] if self._alarms is not None else []
                self._side_effects = alarm + (self.ha.remove(cmd.stream) if self.ha is not None else [])
            return reply(cmd.op, True, stream=cmd.stream, known=known)
        if cmd.op == "accept":
            assert cmd.stream is not None
            known, event = self.engine.accept_stream(cmd.stream)
            if event is not None and self._alarms is not None:  # the cleared alarm, retained, with its reason
                payload = encode_alarm(event, self.engine.meta.model_id)
                self._side_effects = [(self._alarms.topic_for(cmd.stream), payload, True)]
            if event is not None and self.ha is not None:  # Home Assistant's alarm entity off now
                self._side_effects += self.ha.accepted(cmd.stream)
            if known:
                self.request_checkpoint()  # durable once the next checkpoint is written
            return reply("accept", known, stream=cmd.stream, **({} if known else {"error": "no such stream"}))
        if cmd.op == "reload":
            self.request_reload()
            return reply("reload", True, detail="requested: the outcome is logged (reloaded / reload_refused)")
        # checkpoint
        if not self.request_checkpoint():
            return reply("checkpoint", False, error="durable state is off (checkpoint.enabled = false)")
        return reply("checkpoint", True, detail="requested: written as soon as no result awaits the broker")
