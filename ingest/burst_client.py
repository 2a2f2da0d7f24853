"""A paho client that receives and acknowledges in bursts (ingest's, not stock paho).

Why: profiled under the ingest benchmark, stock paho 2.2 spends most of its GIL time per
message on work a feed of many small QoS 1 messages does not need done one at a time. Per
PUBLISH it makes one ``select()`` and three ``recv()`` calls (command byte, length byte(s),
body), parses the MQTT 5 properties into a ``Properties`` object, builds an ``MQTTMessage``,
walks the topic matcher and takes two locks to dispatch the callback; each ``ack()`` queues one
4-byte PUBACK, wakes the network thread through its socket pair and is written by one
``send()``. That paho thread shares the GIL with ingest's parsing, so all of it is taken from
ingest's rate.

This subclass keeps paho's connection handling, sessions, keepalive, reconnects, TLS and
outgoing traffic, and changes three things:

* reads: ``recv()`` fills a 64 KiB buffer; one wake-up of the network thread handles every
  complete packet in it, and at most :data:`READS_PER_WAKE` buffers: a feed that never pauses
  (a backlog, a full in-flight window sent at once) must not keep the thread reading while the
  acknowledgements it queued, its pings and its keepalive check wait for the read to end;
* publishes (QoS 0/1, when ``on_raw_message`` is set): framed and decoded straight from the
  buffer, every complete one in one loop, to ``(mid, qos, topic, payload)``, without paho's
  per-packet reads and ``_in_packet`` state (the time of the last bytes received, which paho's
  keepalive reads, is set once per buffer). MQTT 5 properties are skipped (ingest reads none),
  so a publish whose topic is only a topic alias (property 0x23) cannot be resolved: it is
  refused as a protocol error (citybrain never allows aliases: no Topic Alias Maximum in
  CONNECT means 0 [MQTT-3.2.2-17]), as is QoS 3 [MQTT-3.3.1-4];
* acks: :meth:`ack_many` queues the PUBACKs of a burst as one write, in the order given.

Everything else goes through paho's own reader and handlers unchanged, served from the same
buffer (paho's small reads): QoS 2 publishes, every other packet (CONNACK, SUBACK, PINGRESP,
PUBREL, ...), a packet cut at a buffer's end (it waits in paho's ``_in_packet`` as after any
short read) and a malformed one (paho drops the connection, as for its own malformed packets).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

READ_SIZE = 1 << 16
#: socket reads (of READ_SIZE) per wake-up of the network thread, 1 MiB: then back to select()
#: and paho's writes (the acknowledgements), keepalive and pings, and on with the rest
READS_PER_WAKE = 16
PUBLISH, PUBACK = 0x30, 0x40
#: a PUBACK is 0x40, remaining length 2, then the packet id: one big-endian 32-bit word
_PUBACK_WORD = 0x4002_0000

RawHandler = Callable[[int, int, str, bytes], None]


def _varint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """An MQTT variable byte integer at ``pos``: (value, position after it)."""
    value, shift = 0, 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise MalformedPacket("variable byte integer longer than 4 bytes")


def _publish_at(header: int, buf: bytes | bytearray, start: int, end: int,
                v5: bool) -> tuple[int, int, str, bytes]:
    """(mid, qos, topic, payload) of the PUBLISH body ``buf[start:end]``; see decode_publish."""
    qos = (header & 0x06) >> 1
    if qos == 3:
        raise MalformedPacket("QoS 3")
    pos = start + 2
    if pos > end:
        raise MalformedPacket("short PUBLISH: no topic length")
    tlen = (buf[start] << 8) | buf[start + 1]
    tend = pos + tlen
    if tend > end:
        raise MalformedPacket("bad topic length")
    if not tlen:  # MQTT 5 allows it with a topic alias, which this client never allows
        raise MalformedPacket("empty topic (a topic alias?)")
    mid = 0
    if qos:
        pos = tend + 2
        if pos > end:
            raise MalformedPacket("short PUBLISH: no packet id")
        mid = (buf[tend] << 8) | buf[tend + 1]
    else:
        pos = tend
    if v5:
        try:
            plen, pos = _varint(buf, pos)
        except IndexError:  # (a read past ``end`` inside buf gives a position past it: refused below)
            raise MalformedPacket("short PUBLISH: no properties length") from None
        pos += plen
    if pos > end:
        raise MalformedPacket("properties run past the packet")
    # an invalid UTF-8 topic is kept visible (and rejected downstream) rather than dropped here
    return mid, qos, buf[start + 2:tend].decode("utf-8", "replace"), bytes(buf[pos:end])


def decode_publish(header: int, body: bytes | bytearray, v5: bool) -> tuple[int, int, str, bytes]:
    """(mid, qos, topic, payload) of a PUBLISH body, MQTT 5 properties skipped.

    Raises MalformedPacket as paho's decoder does (the connection is then dropped)."""
    return _publish_at(header, body, 0, len(body), v5)


class BurstClient(mqtt.Client):
    """paho ``Client`` with buffered reads, hand-decoded publishes and burst acks (see module)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: called in paho's thread for each QoS 0/1 publish; must not raise
        self.on_raw_message: RawHandler | None = None
        self._rbuf = b""
        self._rpos = 0
        self._rsock = None  # the socket the buffer was read from: a new connection starts empty
        self._reads_left = READS_PER_WAKE

    def _buffered(self) -> bool:
        return self._rpos < len(self._rbuf) and self._rsock is self._sock

    def _fill(self) -> bool:
        """The next buffer from the socket; False if the connection closed. Raises
        BlockingIOError when this wake-up's READS_PER_WAKE reads are used up (paho keeps a
        partial packet; select() sees the rest), and as paho's ``_sock_recv`` does."""
        if self._reads_left <= 0:
            raise BlockingIOError
        self._reads_left -= 1
        data = super()._sock_recv(READ_SIZE)
        if not data:
            return False
        self._rbuf, self._rpos, self._rsock = data, 0, self._sock
        return True

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._buffered() and not self._fill():
            return b""  # connection closed
        pos = self._rpos
        self._rpos = pos + bufsize
        return self._rbuf[pos:pos + bufsize]

    def _fill_between_packets(self) -> MQTTErrorCode:
        """_fill() where paho would read a command byte, its outcomes mapped as paho maps them."""
        try:
            return MQTTErrorCode.MQTT_ERR_SUCCESS if self._fill() else MQTTErrorCode.MQTT_ERR_CONN_LOST
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except TimeoutError as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "timeout on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        except OSError as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Every complete packet of up to READS_PER_WAKE buffers; returns with the buffer empty,
        so the next ``select()`` sees exactly what the socket still holds (a packet cut at the
        last buffer's end waits in paho's ``_in_packet``, as after any short read).

        Between packets, the QoS 0/1 publishes at the buffer's position are taken by
        :meth:`_read_publishes`; paho's ``_packet_read`` gets the packet it stops at.
        (paho's reader also answers "again" after 100 reads of one large packet even when the
        buffer holds the rest: reading goes on then, as nothing would wake the thread for it.)"""
        self._reads_left = READS_PER_WAKE
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if not self._in_packet["command"]:  # between packets
                rc = MQTTErrorCode.MQTT_ERR_SUCCESS if self._buffered() else self._fill_between_packets()
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    rc = self._read_publishes()
                if rc > 0:
                    return self._loop_rc_handle(rc)
                if rc < 0 or not self._buffered():
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if not self._buffered():
                return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _read_publishes(self) -> MQTTErrorCode:
        """Hands every complete QoS 0/1 PUBLISH from the buffer's position on to
        ``on_raw_message``, up to the first packet that is anything else, is cut at the
        buffer's end or is malformed: that one is paho's (which drops the connection for a
        malformed one, as before)."""
        handler = self.on_raw_message
        if handler is None:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        buf, pos, sock = self._rbuf, self._rpos, self._sock
        end, first = len(buf), self._rpos
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        auto_ack = not self._manual_ack
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        while pos < end and self._sock is sock:
            header = buf[pos]
            if header & 0xF0 != PUBLISH or header & 0x06 == 0x04:  # not a PUBLISH, or QoS 2
                break
            try:  # the fixed header's remaining length, as paho reads it (at most 4 bytes)
                byte = buf[pos + 1]
                length, body = byte & 0x7F, pos + 2
                if byte & 0x80:
                    length, body = _varint(buf, pos + 1)
                stop = body + length
                if stop > end:
                    break  # cut at the buffer's end
                mid, qos, topic, payload = _publish_at(header, buf, body, stop, v5)
            except (IndexError, MalformedPacket):
                break
            pos = self._rpos = stop
            handler(mid, qos, topic, payload)
            if qos == 1 and auto_ack:
                rc = self._send_puback(mid)
                if rc:
                    break
        if pos != first:
            with self._msgtime_mutex:
                self._last_bytes_received = mqtt.time_func()
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        handler, header = self.on_raw_message, self._in_packet["command"]
        if handler is None or (header & 0x06) == 0x04:  # QoS 2: paho's own exchange
            return super()._handle_publish()
        mid, qos, topic, payload = decode_publish(header, self._in_packet["packet"],
                                                  self._protocol == MQTTProtocolVersion.MQTTv5)
        handler(mid, qos, topic, payload)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS 1 messages (manual acks) with one queued write, in the order given.

        From any thread, as paho's ``publish()``: one append to paho's ``_out_packet`` deque and
        a wake of its network thread (``loop_start``), which writes it. PUBACKs queued when the
        connection drops are discarded by paho's reconnect (the broker re-sends those
        messages); ones queued after it go out on the new connection, right for a resumed
        session (same packet ids); for a session the broker lost they could acknowledge a new
        message that reuses the id, so ingest drops acks of messages from before such a
        connection (``Ingest._session``)."""
        words = [_PUBACK_WORD | mid for mid in mids]
        if words:
            self._packet_queue(PUBACK, struct.pack(f">{len(words)}I", *words), 0, 1)
