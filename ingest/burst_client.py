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

* reads: ``recv()`` fills a 64 KiB buffer and paho's small reads are served from it; one
  wake-up of the network thread handles every complete packet in it, and at most
  :data:`READS_PER_WAKE` buffers: a feed that never pauses (a backlog, a full in-flight window
  sent at once) must not keep the thread reading while the acknowledgements it queued, its
  pings and its keepalive check wait for the read to end;
* publishes (QoS 0/1, when ``on_raw_message`` is set): decoded by hand to
  ``(mid, qos, topic, payload)``; MQTT 5 properties are skipped (ingest reads none), so a
  publish whose topic is only a topic alias (property 0x23) cannot be resolved: it is refused
  as a protocol error (citybrain never allows aliases: no Topic Alias Maximum in CONNECT means
  0 [MQTT-3.2.2-17]), as is QoS 3 [MQTT-3.3.1-4];
* acks: :meth:`ack_many` queues the PUBACKs of a burst as one write, in the order given.

QoS 2 publishes and every other packet go through paho unchanged.
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
PUBACK = 0x40
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


def decode_publish(header: int, body: bytes | bytearray, v5: bool) -> tuple[int, int, str, bytes]:
    """(mid, qos, topic, payload) of a PUBLISH body, MQTT 5 properties skipped.

    Raises MalformedPacket as paho's decoder does (the connection is then dropped)."""
    qos = (header & 0x06) >> 1
    if qos == 3:
        raise MalformedPacket("QoS 3")
    try:
        tlen = (body[0] << 8) | body[1]
        pos = 2 + tlen
        topic = bytes(body[2:pos])
        if len(topic) != tlen:
            raise MalformedPacket("bad topic length")
        if not tlen:  # MQTT 5 allows it with a topic alias, which this client never allows
            raise MalformedPacket("empty topic (a topic alias?)")
        mid = 0
        if qos:
            mid = (body[pos] << 8) | body[pos + 1]
            pos += 2
        if v5:
            plen, pos = _varint(body, pos)
            pos += plen
        if pos > len(body):
            raise MalformedPacket("properties run past the packet")
    except IndexError as e:
        raise MalformedPacket(f"short PUBLISH: {e}") from None
    # an invalid UTF-8 topic is kept visible (and rejected downstream) rather than dropped here
    return mid, qos, topic.decode("utf-8", "replace"), bytes(body[pos:])


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

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._buffered():
            if self._reads_left <= 0:  # paho keeps the partial packet; select() sees the rest
                raise BlockingIOError
            self._reads_left -= 1
            data = super()._sock_recv(READ_SIZE)  # BlockingIOError etc. propagate as in paho
            if not data:
                return data  # connection closed
            self._rbuf, self._rpos, self._rsock = data, 0, self._sock
        pos = self._rpos
        self._rpos = pos + bufsize
        return self._rbuf[pos:pos + bufsize]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Every complete packet of up to READS_PER_WAKE buffers; returns with the buffer empty,
        so the next ``select()`` sees exactly what the socket still holds (a packet cut at the
        last buffer's end waits in paho's ``_in_packet``, as after any short read).

        (paho's reader also answers "again" after 100 reads of one large packet even when the
        buffer holds the rest: reading goes on then, as nothing would wake the thread for it.)"""
        self._reads_left = READS_PER_WAKE
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if not self._buffered():
                return MQTTErrorCode.MQTT_ERR_SUCCESS

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
