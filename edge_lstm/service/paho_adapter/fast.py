"""paho's per-packet work cut down for the packets every reading costs (a base of `BatchedClient`):

* a QoS 1 PUBLISH with an empty property block, and a plain PUBACK, are decoded without paho's
  `Properties`/`ReasonCode` objects; a reading goes to `on_reading` as (topic, payload, mid) without
  an `MQTTMessage` (and the `MQTTMessageInfo` and Condition each of those makes);
* a packet whole in the read buffer is cut from it at once (paho reads header, each length byte and
  body separately, updating a dict for each);
* a QoS 1 result published inside a batch is built here, with an info sharing one Condition, and
  joins the batch's write (paho's `publish` spends ~6 µs on checks and debug-log calls for every case);
  so does an ack; a plain PUBACK completes its message and calls `on_handed_over` directly.

Anything else takes paho's own path. These reach into paho 2.x internals (`_in_packet`,
`_out_messages`, ...: the paho adapter, `CHECKED_WITH` in `__init__`);
tests/unit/service/paho_adapter/test_paho_fast.py and tests/integration/test_paho_fast_path.py check each
against stock paho.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

try:
    from paho.mqtt.exception import MalformedPacket  # paho 2.2
except ImportError:  # paho 2.1 (./dev paho found it): defined, and raised, in properties
    from paho.mqtt.properties import MalformedPacket  # type: ignore[attr-defined]

READ_SIZE = 65536  # one recv takes up to this much: many small packets at once
# A read below this many bytes is light traffic: it is acknowledged at once (`quick_ack`), and the network
# thread may nap after it (BatchedClient._loop). A backlog or a high rate fills reads and is read on at once.
SMALL_READ_BYTES = 8192

# Shared, never mutated: what a PUBACK without reason code or properties means (MQTT 5, 3.4.2.1), and
# the (empty) properties of a PUBLISH that has none. Handed to callbacks that only read them.
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_NO_PUBACK_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
_NO_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]

# One Condition for every `_Info`: paho makes one per publish (~0.5 µs, plus its lock), yet the daemon
# never waits on a result; whoever does (`wait_for_publish`) still wakes, as completion notifies all.
_PUBLISHED = threading.Condition()


class _Info(paho.MQTTMessageInfo):
    """`MQTTMessageInfo` sharing one Condition (see `_PUBLISHED`)."""

    __slots__ = ()

    def __init__(self, mid: int) -> None:  # paho's, but without a Condition of its own
        self.mid = mid
        self._published = False
        self._condition = _PUBLISHED
        self.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._iterpos = 0

    def _set_as_published(self) -> None:
        with self._condition:
            self._published = True
            self._condition.notify_all()  # shared: the waiter for this message may not be the first


class _OutMessage(paho.MQTTMessage):
    """An outgoing QoS 1 message of the fast publish path: paho's fields, with an `_Info`."""

    __slots__ = ()

    def __init__(self, mid: int, topic: bytes, payload: bytes, retain: bool) -> None:
        self.timestamp = paho.time_func()
        self.state = paho.mqtt_ms_invalid
        self.dup = False
        self.mid = mid
        self._topic = topic
        self.payload = payload
        self.qos = 1
        self.retain = retain
        self.info = _Info(mid)
        self.properties = None


# Linux only (elsewhere getattr gives None and nothing is set).
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def quick_ack(sock: Any) -> None:
    """Acknowledge what was just read at once instead of the kernel's delayed ACK (up to 40 ms on Linux).

    The daemon sends data back (results, PUBACKs), so Linux treats the connection as interactive and
    delays its ACKs to piggyback them; a broker with Nagle's algorithm on (mosquitto's default,
    `set_tcp_nodelay false`) then holds every later reading until that ACK comes: the readings of a
    batch window wait for the window to close and its results to carry the ACK (docs/performance.md,
    round 9). The kernel clears the flag again, so it is set after every read."""
    if _TCP_QUICKACK is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
    except (OSError, AttributeError, ValueError):
        pass  # not a TCP socket (a Unix socket, the websockets wrapper): no delayed ACK to skip


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _body(buf: bytes, pos: int) -> tuple[int, int] | None:
    """Where the body of the packet at `pos` starts and its length (MQTT's variable-length remaining
    length: 7 bits a byte, at most 4 bytes), or None if it is not all in `buf` (or malformed)."""
    end, at, length, shift = len(buf), pos + 1, 0, 0
    while True:
        if at == end or shift > 21:
            return None
        byte = buf[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (at, length) if at + length <= end else None
        shift += 7


def _fresh_in_packet() -> Any:
    """What paho's `_packet_read` leaves in `_in_packet` after a packet."""
    return {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }


class FastPackets(paho.Client):
    """The fast paths listed in the module docstring; `BatchedClient` sets the batch fields."""

    _quiet: int | None = None  # thread id inside a batch (BatchedClient.batch)
    _coalesced_pub: bytearray  # the batch's QoS 1 publishes, one write
    # Bytes read from the socket and not yet handed to paho (network thread only).
    _rbuf: bytes = b""
    _rpos: int = 0
    _read_bytes: int = 0  # read since the last look (BatchedClient._loop)
    # Called with (topic, payload, mid) for a QoS 1 PUBLISH without properties, instead of building an
    # `MQTTMessage` for `on_message`; None: every message goes to `on_message`.
    on_reading: Callable[[bytes, bytes, int], None] | None = None
    # Called (no arguments) when a plain PUBACK completes a message, instead of `on_publish`.
    on_handed_over: Callable[[], None] | None = None
    _coalesced_ack: bytearray  # the batch's acks, one write

    def _recv_acked(self, bufsize: int) -> bytes:
        data = super()._sock_recv(bufsize)
        if 0 < len(data) < SMALL_READ_BYTES:  # a full read: the broker has data queued, not held by Nagle
            quick_ack(self._sock)
        self._read_bytes += len(data)
        return data

    def _packet_read(self) -> MQTTErrorCode:
        if self._in_packet["command"] != 0:
            return super()._packet_read()  # a packet begun earlier: paho goes on with it
        if self._rpos >= len(self._rbuf):
            try:
                data = self._recv_acked(READ_SIZE)
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError as err:  # as paho's _packet_read
                self._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            if not data:
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            self._rbuf, self._rpos = data, 0
        buf, pos = self._rbuf, self._rpos
        if len(buf) - pos < 2:
            return super()._packet_read()  # too little buffered: paho reads the rest
        if self._read_plain(buf, pos):
            with self._msgtime_mutex:
                self._last_bytes_received = paho.time_func()
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        # A whole packet in the buffer is cut from it in one go; paho would take it in three reads
        # (header, each length byte, body) with a dict update for each.
        body = _body(buf, pos)
        if body is None:
            return super()._packet_read()  # length or body not all here (or malformed: paho's error)
        at, length = body
        self._rpos = at + length
        self._in_packet = {
            "command": buf[pos],
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": length,
            "packet": bytearray(buf[at : at + length]),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = _fresh_in_packet()
        with self._msgtime_mutex:
            self._last_bytes_received = paho.time_func()
        return rc

    def _read_plain(self, buf: bytes, pos: int) -> int:
        """Handle the run of readings and plain PUBACKs whole in `buf` from `pos` in one loop; return
        how many (0: the next packet is something else, or not all here: `_packet_read` takes it).

        These are nearly every packet the daemon receives. Each is handled as `_handle_publish` and
        `_handle_pubackcomp` below handle it, but without the per-packet `_in_packet` dicts, paho's
        dispatch and a return to `loop_read` in between (the network thread's CPU is taken from the
        worker's: both need the GIL)."""
        on_reading = self.on_reading
        readings = on_reading is not None and self._manual_ack and self._protocol == MQTTProtocolVersion.MQTTv5
        done = self.on_handed_over
        pubacks = done is not None and not self._max_inflight_messages
        if not (readings or pubacks):
            return 0
        end, n = len(buf), 0
        in_callback, out_mutex, out_messages = self._in_callback_mutex, self._out_message_mutex, self._out_messages
        while pos + 2 <= end:
            body = _body(buf, pos)
            if body is None:
                break  # length or body not all here (or malformed): `_packet_read` decides
            first, (at, length) = buf[pos], body
            nxt = at + length
            if (first & 0xF6) == 0x32 and readings and on_reading is not None:  # PUBLISH QoS 1 (`_handle_publish`)
                tlen = (buf[at] << 8) | buf[at + 1] if length >= 2 else 0
                props = at + 2 + tlen + 2  # the property length (one byte 0: none)
                if tlen == 0 or length < 2 + tlen + 3 or buf[props] != 0:
                    break
                self._rpos = nxt  # consumed before the callback, as `_packet_read` does
                with in_callback:
                    on_reading(
                        buf[at + 2 : at + 2 + tlen], buf[props + 1 : nxt], (buf[props - 2] << 8) | buf[props - 1]
                    )
            elif (first & 0xF0) == 0x40 and length == 2 and pubacks and done is not None:  # plain PUBACK
                self._rpos = nxt
                mid = (buf[at] << 8) | buf[at + 1]
                with out_mutex:
                    msg = out_messages.pop(mid, None)
                    if msg is not None:
                        msg.info._set_as_published()  # noqa: SLF001
                        if msg.qos > 0:
                            self._inflight_messages -= 1
                if msg is not None:
                    with in_callback:
                        done()
            else:
                break
            pos = nxt
            n += 1
        return n

    def publish(
        self,
        topic: str,
        payload: paho.PayloadType = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> paho.MQTTMessageInfo:
        # The worker's results: QoS 1, bytes, no properties, inside a batch (so the packet joins the
        # batch's one write), no paho window or queue limit (MqttLink's settings). paho's publish costs
        # ~6 µs here (checks for every case, debug-log calls, a Condition per message); this does
        # what it does for this case. Anything else is paho's.
        if (
            qos != 1
            or properties is not None
            or type(payload) is not bytes
            or self._quiet != threading.get_ident()
            or self._max_inflight_messages
            or self._max_queued_messages
        ):
            return super().publish(topic, payload, qos, retain, properties)
        t = topic.encode("utf-8")
        if not t or b"+" in t or b"#" in t or len(t) > 65535 or len(payload) > 268_435_000:
            return super().publish(topic, payload, qos, retain, properties)  # paho raises
        mid = self._mid_generate()
        message = _OutMessage(mid, t, payload, retain)
        info = message.info
        with self._out_message_mutex:
            if mid in self._out_messages:  # the 16-bit id wrapped onto one in flight: as paho
                info.rc = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
                return info
            self._out_messages[mid] = message
            if self._sock is None:  # sent by paho after the next CONNACK, as paho does
                message.state = paho.mqtt_ms_publish
                info.rc = MQTTErrorCode.MQTT_ERR_NO_CONN
                return info
            self._inflight_messages += 1
            message.state = paho.mqtt_ms_wait_for_puback
            head = b"\x32" if not retain else b"\x33"  # PUBLISH, QoS 1
            props = b"\x00" if self._protocol == MQTTProtocolVersion.MQTTv5 else b""  # no properties
            self._coalesced_pub += b"".join(
                (
                    head,
                    _remaining_length(4 + len(t) + len(props) + len(payload)),
                    len(t).to_bytes(2, "big"),
                    t,
                    mid.to_bytes(2, "big"),
                    props,
                    payload,
                )
            )
        return info

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        # Packet id only: success, no properties, in every protocol version. paho's decode would build
        # a ReasonCode and a Properties for it; the rest is what paho does.
        mid = (packet[0] << 8) | packet[1]
        done = self.on_handed_over
        with self._out_message_mutex:
            if mid not in self._out_messages:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            if done is None or self._max_inflight_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _NO_PUBACK_PROPERTIES)
            # paho's _do_on_publish without its callback machinery; the message is marked published
            # before the callback (paho does it after), so whoever the callback wakes finds it done.
            msg = self._out_messages.pop(mid)
            msg.info._set_as_published()  # noqa: SLF001
            if msg.qos > 0:
                self._inflight_messages -= 1
        with self._in_callback_mutex:
            done()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        # Inside a batch, a PUBACK is 4 bytes added to the batch's acks (paho: a log call, a struct and
        # a queued packet per ack); the bytes are paho's (`_send_command_with_mid`).
        if qos == 1 and self._manual_ack and self._quiet == threading.get_ident():
            self._coalesced_ack += b"\x40\x02" + mid.to_bytes(2, "big")
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super().ack(mid, qos)

    def _handle_publish(self) -> MQTTErrorCode:
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        # The daemon's reading: QoS 1 (header bits 1-2), acked by the worker (manual_ack), MQTT 5 with
        # an empty property block, a topic without alias. Anything else is paho's.
        if (header & 0x06) != 0x02 or not self._manual_ack or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()
        tlen = (packet[0] << 8) | packet[1]
        at = 2 + tlen  # packet id, then the property length
        if tlen == 0 or len(packet) < at + 3 or packet[at + 2] != 0:
            return super()._handle_publish()
        on_reading = self.on_reading
        if on_reading is not None:  # no MQTTMessage (and its MQTTMessageInfo) for a reading
            with self._in_callback_mutex:
                on_reading(bytes(packet[2:at]), bytes(packet[at + 3 :]), (packet[at] << 8) | packet[at + 1])
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        message = paho.MQTTMessage(mid=(packet[at] << 8) | packet[at + 1], topic=bytes(packet[2:at]))
        message.dup = bool(header & 0x08)
        message.qos = 1
        message.retain = bool(header & 0x01)
        message.properties = _NO_PUBLISH_PROPERTIES
        message.payload = bytes(packet[at + 3 :])
        message.timestamp = paho.time_func()
        self._handle_on_message(message)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
