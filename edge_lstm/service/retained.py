"""Retained state the broker must hold again after every (re)connect.

A broker restarted without persistence forgets every retained message. `status` is published again by
the link on connect (mqtt.py); the alarm topics are retained only when a stream's alarm *changes*, so a
dashboard connecting after such a restart saw no alarm for a stream whose alarm was still raised. On
every new connection the daemon therefore publishes the current `raised` alarms again (the same payload
a change published; a `cleared` alarm and no retained message mean the same: no alarm).
"""

from __future__ import annotations

import numpy as np

from ..engine import Engine
from ..ports import Link
from ..result import AlarmEvent, encode_alarm
from ..topics import TopicPattern


def raised_alarms(engine: Engine) -> list[AlarmEvent]:
    """The streams in the table whose alarm is raised now, as the event that raised it reports them."""
    table = engine.table
    cols = table.columns
    if "alarm.raised" not in cols or not len(table):
        return []
    slots = table.lru()  # LRU order; only the raised alarms' ids are decoded
    raised = np.flatnonzero(cols["alarm.raised"][slots]).tolist()
    since, peak, count = cols["alarm.since"], cols["alarm.peak"], cols["alarm.readings"]
    streams = table.index.names(slots[raised].tolist())
    return [
        AlarmEvent(stream, "raised", float(since[slots[i]]), float(peak[slots[i]]), int(count[slots[i]]))
        for stream, i in zip(streams, raised)
    ]


def alarm_publishes(engine: Engine, pattern: TopicPattern | None) -> list[tuple[str, bytes]]:
    """(topic, payload) of every raised alarm, for publishing retained; none without an alarm topic."""
    if pattern is None:
        return []
    model = engine.meta.model_id
    return [(pattern.topic_for(e.stream), encode_alarm(e, model)) for e in raised_alarms(engine)]


def republish(link: Link, engine: Engine, pattern: TopicPattern | None, qos: int) -> int:
    """Publish the raised alarms retained on a new connection; returns the connection's generation."""
    for topic, payload in alarm_publishes(engine, pattern):
        link.publish(topic, payload, qos, True)
    return link.generation
