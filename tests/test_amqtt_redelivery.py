"""The embedded amqtt broker keeps what it delivered but was not acknowledged.

Ingest acknowledges an MQTT message only after Kafka acknowledged its record, on a persistent
session (clean_session False, MQTT 3.1.1 on amqtt), so a kill -9 of ingest loses nothing only
if the broker redelivers every unacknowledged QoS 1 message when the same client id comes back,
and queues what arrived meanwhile [MQTT-4.4.0-1]. Stock amqtt 0.12 forgets both (see
citybrain/amqtt_session.py). Real broker process (the ``amqtt`` fixture, as `citybrain up` runs
it), stock paho clients, sockets closed abruptly (RST, no DISCONNECT) the way a killed process
leaves them.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from tests.ingest_helpers import wait_for


class Subscriber:
    """A stock paho subscriber on a persistent session with manual acks: it acknowledges a
    message only when ``ack_if(index)`` says so (the index is the payload)."""

    def __init__(self, broker: tuple[str, int], client_id: str, ack_if) -> None:
        self.ack_if, self.got, self.session_present = ack_if, [], None
        self.lock, self.connected = threading.Lock(), threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=False, manual_ack=True)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.connect(*broker, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(10), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self.session_present = flags.session_present
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        i = int(msg.payload)
        with self.lock:
            self.got.append(i)
        if self.ack_if(i):
            client.ack(msg.mid, msg.qos)

    def indices(self) -> set[int]:
        with self.lock:
            return set(self.got)

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos=1)
        assert done.wait(10), "no SUBACK"

    def die(self) -> None:
        """As a kill -9 leaves it: the network thread stops and the socket is reset, no DISCONNECT."""
        sock = self.c.socket()
        self.c.loop_stop()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def publish(broker: tuple[str, int], topic: str, indices: range) -> None:
    """QoS 1, each acknowledged by the broker before this returns."""
    p = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                    protocol=mqtt.MQTTv311)
    p.max_inflight_messages_set(200)
    p.connect(*broker)
    p.loop_start()
    try:
        infos = [p.publish(topic, str(i), qos=1) for i in indices]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        p.disconnect()
        p.loop_stop()


N, OFFLINE = 300, 200


@pytest.mark.parametrize(("acked", "hold_s"), [
    pytest.param(lambda i: False, 0.0, id="acks-none"),
    pytest.param(lambda i: i % 3 == 0, 0.0, id="acks-some"),
    # longer than amqtt's 5 s PUBACK wait: ingest holds its acks that long while Kafka is down
    pytest.param(lambda i: i % 3 == 0, 6.0, id="acks-some-late"),
])
def test_resumed_session_gets_every_unacknowledged_and_queued_message(amqtt, acked, hold_s):
    cid, topic = f"redeliver-{uuid.uuid4().hex[:8]}", f"t/{uuid.uuid4().hex[:8]}/x"
    sub = Subscriber(amqtt, cid, acked)
    sub.subscribe(topic)
    publish(amqtt, topic, range(N))
    wait_for(lambda: sub.indices() >= set(range(N)), 30)  # all delivered, some acknowledged
    time.sleep(hold_s)
    sub.die()
    unacked = {i for i in range(N) if not acked(i)}
    publish(amqtt, topic, range(N, N + OFFLINE))  # arrives while the subscriber is away

    back = Subscriber(amqtt, cid, lambda i: True)  # same client id, clean_session False, no re-subscribe
    try:
        want = unacked | set(range(N, N + OFFLINE))
        assert back.session_present, "the broker dropped the persistent session"
        try:
            wait_for(lambda: back.indices() >= want, 20)
        except AssertionError:
            missing = want - back.indices()
            pytest.fail(f"{len(missing)} of {len(want)} messages lost: "
                        f"{len(missing & unacked)} delivered-not-acknowledged, {len(missing - unacked)} queued offline")
    finally:
        back.close()
