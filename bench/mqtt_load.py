"""A cheap MQTT load generator and result collector for bench/bench_mqtt.py (plain sockets, MQTT 3.1.1).

On a 2-core machine the benchmark's own paho publisher and collector used about two thirds of a core at
11,000 readings/s (docs/performance.md, round 4): more than the daemon they measure. Here:

* `RawPublisher` writes pre-encoded QoS 1 PUBLISH packets, a burst at a time with one `send`; the
  reading's `ts` is the time of that write (taken just before it), so the latency measured still starts
  when the reading is handed to the broker's socket. PUBACKs are read and counted (`flush` waits for
  all of them), so every reading is still a QoS 1 publish the broker has taken.
* `RawSubscriber` subscribes at QoS 0 and cuts PUBLISH packets from what one `recv` returns; every
  packet of a read gets the time of that read (when the collector saw it), and a result's `ts` (the
  reading's, echoed) is found with one regular expression instead of decoding the whole JSON.

Only what the benchmark needs: no TLS, no reconnect, keepalive off.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable, Sequence

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, DISCONNECT = 1, 2, 3, 4, 8, 9, 14

TS = re.compile(rb'"ts":\s*([-+0-9.eE]+)')


# The load generator encodes MQTT itself on purpose, rather than calling the daemon's paho_fast: a
# benchmark that shared the code under test could not catch that code's encoding mistakes.
def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def mqtt_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str) -> bytes:
    # MQTT 3.1.1, clean session, keepalive 0 (off: the benchmark's connections are short and busy).
    body = mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + mqtt_str(client_id)
    return bytes([CONNECT << 4]) + remaining_length(len(body)) + body


def split_packets(buf: bytes | bytearray, pos: int = 0) -> tuple[list[tuple[int, int, int]], int]:
    """Complete packets in `buf` from `pos`: [(first byte, body start, body end)], and where the first
    incomplete one starts."""
    out: list[tuple[int, int, int]] = []
    end = len(buf)
    while pos + 2 <= end:
        at, length, shift = pos + 1, 0, 0
        while True:
            if at == end:
                return out, pos
            byte = buf[at]
            at += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        if at + length > end:
            break
        out.append((buf[pos], at, at + length))
        pos = at + length
    return out, pos


def _connect(port: int, client_id: str, host: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(connect_packet(client_id))
    ack = b""
    while len(ack) < 4:
        chunk = s.recv(4 - len(ack))
        if not chunk:
            raise ConnectionError("broker closed the connection before CONNACK")
        ack += chunk
    if ack[0] >> 4 != CONNACK or ack[3] != 0:
        raise ConnectionError(f"CONNACK refused: {ack!r}")
    return s


class RawPublisher:
    """QoS 1 publishes written as pre-encoded packets, many per `send`."""

    def __init__(self, port: int, client_id: str = "") -> None:
        self.sock = _connect(port, client_id or f"bench-pub-{id(self):x}")
        self.sock.setblocking(False)
        self.mid = 0
        self.sent = 0
        self.acked = 0
        self._rbuf = b""

    def publish(self, packets: Sequence[tuple[bytes, bytes]]) -> None:
        """Send (topic part, payload) pairs as QoS 1 PUBLISH packets, one write. The topic part is
        `mqtt_str(topic)` (`topic_part`), pre-encoded by the caller."""
        out = bytearray()
        mid = self.mid
        for topic, payload in packets:
            mid = mid % 0xFFFF + 1
            out += b"\x32"
            out += remaining_length(len(topic) + 2 + len(payload))
            out += topic
            out += struct.pack("!H", mid)
            out += payload
        self.mid = mid
        self._send(out)
        self.sent += len(packets)

    def _send(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                self.poll(0.01)  # the socket is full: read acks while the broker catches up
                continue
            view = view[n:]

    def poll(self, timeout: float = 0.0) -> None:
        """Read and count whatever PUBACKs have arrived (waiting up to `timeout` for the first)."""
        if timeout:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, TimeoutError):
            return
        finally:
            if timeout:
                self.sock.setblocking(False)
        if not data:
            raise ConnectionError("broker closed the publisher's connection")
        buf = self._rbuf + data
        packets, pos = split_packets(buf)
        self.acked += sum(1 for first, _, _ in packets if first >> 4 == PUBACK)
        self._rbuf = buf[pos:]

    def flush(self, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and time.monotonic() < deadline:
            self.poll(0.05)
        return self.acked >= self.sent

    def close(self) -> None:
        self.flush()
        try:
            self.sock.setblocking(True)
            self.sock.sendall(bytes([DISCONNECT << 4, 0]))
        finally:
            self.sock.close()


def topic_part(topic: str) -> bytes:
    return mqtt_str(topic)


class RawSubscriber:
    """A QoS 0 subscription; `run` calls `on_batch(now, payloads)` for each read's PUBLISH payloads."""

    def __init__(self, port: int, topic: str, client_id: str = "") -> None:
        self.sock = _connect(port, client_id or f"bench-sub-{id(self):x}")
        body = struct.pack("!H", 1) + mqtt_str(topic) + b"\x00"
        self.sock.sendall(bytes([SUBSCRIBE << 4 | 2]) + remaining_length(len(body)) + body)
        ack = b""
        while len(ack) < 5:  # SUBACK: nothing else comes before it on a fresh clean session
            chunk = self.sock.recv(5 - len(ack))
            if not chunk:
                raise ConnectionError("broker closed the connection before SUBACK")
            ack += chunk
        if ack[0] >> 4 != SUBACK or ack[4] & 0x80:
            raise ConnectionError(f"SUBACK refused: {ack!r}")
        self.sock.settimeout(None)

    def run(self, on_batch: Callable[[float, list[bytes]], None]) -> None:
        """Read until the connection ends (`close` from another thread ends it)."""
        buf = b""
        sock = self.sock
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            now = time.time()
            buf = buf + data if buf else data
            packets, pos = split_packets(buf)
            payloads = []
            for first, start, end in packets:
                kind = first >> 4
                if kind == PUBLISH:
                    tlen = (buf[start] << 8) | buf[start + 1]
                    body = start + 2 + tlen + (2 if first & 0x06 else 0)
                    payloads.append(buf[body:end])
            buf = buf[pos:]
            if payloads:
                on_batch(now, payloads)

    def close(self) -> None:
        try:
            self.sock.sendall(bytes([DISCONNECT << 4, 0]))
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def result_ts(payload: bytes) -> float:
    m = TS.search(payload)
    if m is None:
        raise ValueError(f"no ts in result {payload[:80]!r}")
    return float(m.group(1))
