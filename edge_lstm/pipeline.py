"""A batch of received messages → stepped results → what to publish and what to journal. Pure.

    Inbound(topic, payload) ─ topic → stream (topics) ─ payload → Reading (reading) ─┐
                                                                                     ▼
    Processed(publishes, reading to journal) ◀── encode (result) ◀── Engine.process (engine)

The daemon (service/daemon.py) owns the I/O around it: taking messages from the link, publishing,
journaling and acknowledging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .engine import Engine
from .ports import Inbound
from .reading import Decoder, Reading, Rejection
from .result import Result, encode, encode_alarm, encode_rejection
from .topics import TopicPattern

TOPIC_CACHE = 4096  # output topics cached at a time (a daemon with fewer streams computes each once)


@dataclass(slots=True)
class Processed:
    """The outcome of one received message, in the order received."""

    message: Inbound
    topic: str
    publishes: list[tuple[str, bytes, bool]]  # (topic, payload, retain)
    reading: Reading | None  # stepped: journal it before acknowledging; None for a rejection
    rejection: Rejection | None
    result: Result | None = None  # the stepped result (Home Assistant's state is built from it)


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        decoder: Decoder,
        input_pattern: TopicPattern,
        output_pattern: TopicPattern,
        *,
        errors_topic: str = "",
        alarm_pattern: TopicPattern | None = None,
    ) -> None:
        self.engine = engine
        self.decoder = decoder
        self.input = input_pattern
        self.errors_topic = errors_topic
        # Sanitising a stream id into its output topic costs ~1.9 µs, a cache hit ~0.1 µs; the cache is
        # bounded (cleared when full): one entry per stream of a large table would cost ~170 bytes each.
        self.output = output_pattern
        self._topics: dict[str, str] = {}
        self.alarm_pattern = alarm_pattern
        self.batches = 0

    def topic_for(self, stream: str) -> str:
        """The stream's output topic (cached for up to `TOPIC_CACHE` streams at a time)."""
        topic = self._topics.get(stream)
        if topic is None:
            if len(self._topics) >= TOPIC_CACHE:
                self._topics.clear()
            topic = self._topics[stream] = self.output.topic_for(stream)
        return topic

    def run(self, batch: Sequence[Inbound]) -> list[Processed]:
        decoded: list[Reading | Rejection] = []
        topics: list[str] = []
        stream_of, decode = self.input.stream_of, self.decoder.decode
        for m in batch:
            try:
                topic = m.topic.decode("utf-8")
            except UnicodeDecodeError:
                topic = m.topic.decode("utf-8", "replace")
                decoded.append(Rejection("", "bad_stream", "topic is not valid UTF-8"))
                topics.append(topic)
                continue
            topics.append(topic)
            stream = stream_of(topic)
            if stream is None:
                decoded.append(Rejection("", "bad_stream", f"topic does not match {self.input.pattern!r}"))
                continue
            decoded.append(decode(stream, m.payload, m.arrival))
        outcomes = self.engine.process(decoded)
        self.batches += 1
        out: list[Processed] = []
        errors_topic, topic_for = self.errors_topic, self.topic_for
        model = self.engine.meta.model_id
        for m, topic, reading, res in zip(batch, topics, decoded, outcomes):
            if type(res) is Result:
                try:
                    pubs = [(topic_for(res.stream), encode(res), False)]
                    if res.alarm_event is not None and self.alarm_pattern is not None:
                        # Retained: a subscriber (or Home Assistant) learns the current state on subscribing.
                        alarm = encode_alarm(res.alarm_event, model)
                        pubs.append((self.alarm_pattern.topic_for(res.stream), alarm, True))
                except Exception as e:  # noqa: BLE001 - a bug no input should reach: see _unpublishable
                    out.append(self._unpublishable(m, topic, reading, res, e))  # type: ignore[arg-type]
                    continue
                out.append(Processed(m, topic, pubs, reading, None, res))  # type: ignore[arg-type]
            else:
                rej: Rejection = res  # type: ignore[assignment]
                pubs = [(errors_topic, encode_rejection(rej, topic), False)] if errors_topic else []
                out.append(Processed(m, topic, pubs, None, rej))
        return out

    def _unpublishable(self, m: Inbound, topic: str, reading: Reading, res: Result, e: Exception) -> Processed:
        """A stepped reading whose result could not be encoded: rejected `internal_error` (counted), and
        still journaled (`reading`), since the engine's state has taken it; the batch's others go on."""
        self.engine.stats.rejected["internal_error"] += 1
        rej = internal_error(res.stream, e)
        pubs = [(self.errors_topic, encode_rejection(rej, topic), False)] if self.errors_topic else []
        return Processed(m, topic, pubs, reading, rej)


def internal_error(stream: str, e: Exception) -> Rejection:
    """The rejection of a reading that hit a bug no input should reach (counted by the caller)."""
    return Rejection(stream[:200], "internal_error", f"{type(e).__name__}: {e}"[:300])
