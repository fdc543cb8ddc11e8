"""paho's client with the changes the daemon needs, kept apart from `mqtt.MqttLink` (which owns the
session, the callbacks and backpressure):

* a batch of publishes and acks wakes paho's network thread once, not once per packet, and goes out
  as one write (`batch`);
* `repair_window`: resend QoS 1/2 messages paho left unsent while connected (`MqttLink.kick`);
* the packets every reading costs (its PUBLISH, its result's PUBLISH and PUBACK) skip most of paho's
  per-packet work (`fast.FastPackets`, the base class);
* reads are buffered: paho asks the socket for a packet's header, length and body separately (three
  `recv` calls per packet); here one `recv` takes whatever is there and later packets come from it.

All reach into paho 2.x internals (`_packet_queue`, `_out_messages`, ...), so they live in the paho
adapter (this package: `CHECKED_WITH` in `__init__`; tests/integration/test_paho_fast_path.py checks
them against stock paho on a real broker).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from .fast import READ_SIZE, SMALL_READ_BYTES, FastPackets

MIN_NAP_S = 0.0005  # shorter: not worth a select
MAX_NAP_S = 0.1  # keepalive and a reconnect are looked after at least this often


class ReadsDue(Protocol):
    read_by: float  # time.monotonic() by which the worker needs what has arrived


# Outgoing QoS 1/2 states paho counts in `_inflight_messages` (sent, acknowledgement awaited).
_AWAITING_ACK = (
    paho.mqtt_ms_wait_for_puback,
    paho.mqtt_ms_wait_for_pubrec,
    paho.mqtt_ms_wait_for_pubcomp,
    paho.mqtt_ms_resend_pubrel,
)


def no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """paho's `on_socket_open`: TCP_NODELAY on the broker connection. A batch's results go out as one
    write, then its acks as another; with Nagle's algorithm on, the second small write (and the next
    batch's results) waits for the broker's ACK of the first, which a broker may delay (delayed ACK)
    when it has nothing to send back. paho does not set it."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (a Unix socket, the websockets wrapper): no Nagle to turn off


def is_handed_over(info: paho.MQTTMessageInfo) -> bool:
    """True once the broker has the message (PUBACK for QoS 1, written to the socket for QoS 0).

    `MQTTMessageInfo.is_published()` raises for a message queued while disconnected (rc NO_CONN) even
    though paho keeps it and sends it after reconnecting; the flag itself is what we need.
    """
    return bool(info._published)  # noqa: SLF001 - set under paho's condition; a bool read is atomic


def settle_dropped_qos0(info: paho.MQTTMessageInfo) -> None:
    """Mark a QoS 0 message paho refused (rc NO_CONN while disconnected) as done.

    paho drops a QoS 0 message it cannot send and never completes its info (client.py `publish`, qos == 0
    branch). The message is gone, as QoS 0 allows; whoever waits for it (a reading's acknowledgement)
    must not wait forever.
    """
    if info.rc != paho.MQTT_ERR_SUCCESS and not info._published:  # noqa: SLF001
        info._set_as_published()  # noqa: SLF001


def raw_topic(msg: paho.MQTTMessage) -> bytes:
    """A received message's topic as the bytes on the wire (`msg.topic` decodes it: the worker's job)."""
    return bytes(msg._topic)  # noqa: SLF001


@dataclass(frozen=True, slots=True)
class Repaired:
    """What `BatchedClient.repair_window` found stuck and resent."""

    stuck: int
    inflight_counter: int  # paho's in-flight counter before the repair
    inflight_actual: int  # messages actually awaiting an acknowledgement
    oldest_age_s: float


class BatchedClient(FastPackets):
    """paho's client with the changes listed in the module docstring.

    Batches: in threaded mode paho writes one byte to its socket pair for every queued packet
    (`_packet_queue`) so that `select()` returns, the network thread reads them back, and it writes each
    packet with its own `send()`. For a batch of results and acks that is several syscalls per packet.
    Inside `batch` the worker's packets are queued quietly, QoS 1 publishes and acks as one packet, and
    the network thread is woken once at the end.
    """

    # Inside `batch` (set there; declared in FastPackets): publishes and acks, one packet each.
    _coalesce_sock: object = None  # the connection they were made for

    # The worker's `Doorbell` (its `read_by`: when it next needs what has arrived); None: no naps.
    reads_due: ReadsDue | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_socket_open = no_delay

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos < len(self._rbuf):
            end = min(self._rpos + bufsize, len(self._rbuf))
            out = self._rbuf[self._rpos : end]
            self._rpos = end
            return out
        data = self._recv_acked(max(bufsize, READ_SIZE))  # raises BlockingIOError when empty
        if len(data) <= bufsize:
            return data
        self._rbuf, self._rpos = data, bufsize
        return data[:bufsize]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # paho reads a bounded number of packets per call and then waits in select(); packets already
        # in our buffer would not wake it. Whatever is buffered is read now (a read that needs more
        # than the buffer holds goes to the socket, so this ends).
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._rpos < len(self._rbuf):
            rc = super().loop_read(max_packets)
        return rc

    def _loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        """paho's loop step, then a nap after a small read while the worker does not need the readings
        yet (`reads_due`): until then only the worker's wake-up (results, acks to write) ends it. Each
        reading arriving alone woke this thread once (docs/performance.md, round 9); a large read (a
        backlog, a high rate) is not followed by a nap."""
        rc = super()._loop(timeout)
        got, self._read_bytes = self._read_bytes, 0
        due, wake = self.reads_due, self._sockpairR
        if due is None or wake is None or not 0 < got < SMALL_READ_BYTES or rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return rc
        if self.want_write():
            return rc  # a write the socket could not take whole: paho's select waits until it can
        nap = min(due.read_by - time.monotonic(), MAX_NAP_S)
        if nap > MIN_NAP_S:
            try:
                select.select([wake], [], [], nap)
            except (OSError, ValueError):
                pass  # closed by a reconnect: paho's next step sees it
        return rc

    def _sock_close(self) -> None:
        super()._sock_close()
        self._rbuf, self._rpos = b"", 0  # never hand a new connection the old one's bytes

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: paho.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if self._quiet is None or self._quiet != threading.get_ident():
            return super()._packet_queue(command, packet, mid, qos, info)
        # Nothing happens after these are written (paho acts after writing only on QoS 0 PUBLISH and
        # DISCONNECT): the batch's go out as one write each instead of one send() per packet.
        if (command & 0xF0) == paho.PUBACK:
            self._coalesced_ack += packet
            return paho.MQTT_ERR_SUCCESS
        if (command & 0xF0) == paho.PUBLISH and qos > 0:
            self._coalesced_pub += packet
            return paho.MQTT_ERR_SUCCESS
        self._flush_coalesced()  # keep the order of packets
        self._out_packet.append(
            {
                "command": command,
                "mid": mid,
                "qos": qos,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": info,
            }
        )
        return paho.MQTT_ERR_SUCCESS

    def _flush_coalesced(self) -> None:
        pub, ack = self._coalesced_pub, self._coalesced_ack
        self._coalesced_pub, self._coalesced_ack = bytearray(), bytearray()
        # Publishes go out even if the connection was replaced meanwhile: paho resends only those it
        # had before the reset, so a late one is at most a duplicate (QoS 1 allows it), never lost.
        # Acks do not: the old connection's packet ids must not reach the new one (the broker
        # redelivers those readings, and their duplicates are acked then).
        if not (ack and self._sock is self._coalesce_sock):
            ack = bytearray()
        for data in (pub, ack):
            if data:
                self._out_packet.append(
                    {
                        "command": paho.PUBACK,  # paho looks at it after the write only for PUBLISH QoS 0
                        "mid": 0,
                        "qos": 0,
                        "pos": 0,
                        "to_process": len(data),
                        "packet": data,
                        "info": None,
                    }
                )

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Packets queued inside by this thread go out with one wake-up of the network thread, QoS 1
        publishes and acks as one write."""
        self._quiet = threading.get_ident()
        self._coalesced_pub, self._coalesced_ack = bytearray(), bytearray()
        self._coalesce_sock = self._sock
        try:
            yield
        finally:
            self._flush_coalesced()
            self._quiet = None
            w = self._sockpairW
            if w is not None and self._out_packet:
                try:
                    w.send(b"0")
                except OSError:
                    pass  # closed by a reconnect: the network thread writes out_packet in its next loop anyway

    def repair_window(self, min_age_s: float) -> Repaired | None:
        """Resend QoS 1/2 messages older than `min_age_s` that sit unsent while connected.

        paho sends a message that did not fit the in-flight window (state `queued`) only from
        `_update_inflight`, run when a PUBACK/PUBCOMP arrives; messages left in state `publish` are
        resent only by `_handle_connack`. If its in-flight counter ever disagrees with the messages
        actually awaiting an acknowledgement, or a resend is skipped (`_handle_connack` returns at the
        first `queued` message), those messages wait forever while connected. Here: recount the window
        and send what fits. Returns None when nothing was stuck (then it changes nothing).
        """
        if not self.is_connected():
            return None
        now = paho.time_func()  # the clock of MQTTMessage.timestamp
        with self._out_message_mutex:  # paho's own lock for these fields
            msgs = list(self._out_messages.values())
            inflight = sum(1 for m in msgs if m.state in _AWAITING_ACK)
            window = self._max_inflight_messages  # 0: no window (the link's default)
            room = window == 0 or inflight < window
            # `queued` is normal while the window is full; `publish` is never normal once connected.
            # timestamp 0: reset by a reconnect and not yet resent by _handle_connack (it sets it): skip.
            stuck = [
                m
                for m in msgs
                if m.qos > 0
                and m.timestamp > 0
                and now - m.timestamp >= min_age_s
                and (m.state == paho.mqtt_ms_publish or (room and m.state == paho.mqtt_ms_queued))
            ]
            if not stuck:
                return None
            counter = self._inflight_messages
            for m in stuck:
                m.state = paho.mqtt_ms_queued
            self._inflight_messages = inflight
            if window:
                self._update_inflight()  # sends queued messages while the window has room
            else:
                for m in stuck:  # no window: send each as paho's publish() does
                    self._inflight_messages += 1
                    m.state = paho.mqtt_ms_wait_for_puback if m.qos == 1 else paho.mqtt_ms_wait_for_pubrec
                    self._send_publish(
                        m.mid, m.topic.encode("utf-8"), m.payload, m.qos, m.retain, m.dup, properties=m.properties
                    )
        return Repaired(len(stuck), counter, inflight, round(now - min(m.timestamp for m in stuck), 1))
