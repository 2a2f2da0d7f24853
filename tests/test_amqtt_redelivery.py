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

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from amqtt.mqtt.constants import QOS_1
from amqtt.session import OutgoingApplicationMessage, Session

from citybrain import amqtt_session
from citybrain.amqtt_session import DurableBroker, DurableProtocolHandler
from citybrain.brokers import amqtt_config
from tests.conftest import free_port, wait_port
from tests.ingest_helpers import wait_for


class Subscriber:
    """A stock paho subscriber on a persistent session with manual acks: it acknowledges a
    message only when ``ack_if(index)`` says so (the index is the payload)."""

    def __init__(self, broker: tuple[str, int], client_id: str, ack_if, clean: bool = False) -> None:
        self.ack_if, self.got, self.session_present = ack_if, [], None
        self.lock, self.connected = threading.Lock(), threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=clean, manual_ack=True)
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


def test_a_clean_session_discards_what_the_persistent_one_was_owed(amqtt):
    cid, topic = f"cleaned-{uuid.uuid4().hex[:8]}", f"t/{uuid.uuid4().hex[:8]}/x"
    sub = Subscriber(amqtt, cid, lambda i: False)
    sub.subscribe(topic)
    publish(amqtt, topic, range(20))
    wait_for(lambda: sub.indices() >= set(range(20)), 20)
    sub.die()
    publish(amqtt, topic, range(20, 30))  # queued for the persistent session
    clean = Subscriber(amqtt, cid, lambda i: True, clean=True)  # [MQTT-3.1.2-6]: state discarded
    try:
        assert clean.session_present is False
        time.sleep(1.0)
        assert clean.indices() == set()  # neither the unacknowledged nor the queued ones
    finally:
        clean.close()
    # persistent again, at once (amqtt forgets a disconnected clean session only within a second):
    # a new session, nothing left over, and kept this time
    again = Subscriber(amqtt, cid, lambda i: False)
    again.subscribe(topic)
    assert again.session_present is False
    publish(amqtt, topic, range(100, 110))
    wait_for(lambda: again.indices() >= set(range(100, 110)), 20)
    assert again.indices() == set(range(100, 110))
    again.die()
    time.sleep(2.5)  # past amqtt's sweep of disconnected clean sessions
    publish(amqtt, topic, range(110, 120))
    back = Subscriber(amqtt, cid, lambda i: True)
    try:
        assert back.session_present
        wait_for(lambda: back.indices() >= set(range(100, 120)), 20)
    finally:
        back.close()


@contextlib.contextmanager
def broker_in_this_process(**config):
    """The embedded broker on a loop in a thread, with amqtt settings a test can shorten."""
    port, loop = free_port(), asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> DurableBroker:
        broker = DurableBroker({**amqtt_config(port), **config})
        await broker.start()
        return broker

    broker = asyncio.run_coroutine_threadsafe(start(), loop).result(20)
    try:
        wait_port(port)
        yield ("127.0.0.1", port)
    finally:
        asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_an_expired_session_is_not_discarded_silently_with_what_it_was_owed(caplog):
    cid, topic = f"expiring-{uuid.uuid4().hex[:8]}", f"t/{uuid.uuid4().hex[:8]}/x"
    with caplog.at_level(logging.WARNING, logger="citybrain.amqtt_session"), \
            broker_in_this_process(session_expiry_interval=1) as broker:
        sub = Subscriber(broker, cid, lambda i: i < 10)
        sub.subscribe(topic)
        publish(broker, topic, range(30))
        wait_for(lambda: sub.indices() >= set(range(30)), 20)
        time.sleep(0.3)  # its acks of 0..9 are in
        sub.die()
        publish(broker, topic, range(30, 45))  # queued for the session while it is away
        said = f"session of client {cid} discarded with 35 QoS 1 messages the client never acknowledged " \
               "(20 sent, 15 not yet sent)"
        wait_for(lambda: said in caplog.text, 20)


def test_past_the_window_messages_are_kept_in_order_and_past_the_queue_dropped_with_the_count_said(
        caplog, monkeypatch):
    monkeypatch.setattr(amqtt_session, "MAX_INFLIGHT", 20)  # the client holds 20 unacknowledged
    monkeypatch.setattr(amqtt_session, "MAX_QUEUED", 100)  # and the broker 80 more for it
    cid, topic = f"window-{uuid.uuid4().hex[:8]}", f"t/{uuid.uuid4().hex[:8]}/x"
    with caplog.at_level(logging.WARNING, logger="citybrain.amqtt_session"), \
            broker_in_this_process() as broker:
        sub = Subscriber(broker, cid, lambda i: False)
        sub.subscribe(topic)
        publish(broker, topic, range(150))  # the last 50 do not fit
        wait_for(lambda: len(sub.indices()) >= 20, 20)
        time.sleep(0.5)
        assert sub.indices() == set(range(20))  # the window, no more
        sub.die()
        back = Subscriber(broker, cid, lambda i: True)
        try:
            wait_for(lambda: len(back.got) >= 100, 20)
            publish(broker, topic, range(200, 201))  # room again
            wait_for(lambda: 200 in back.indices(), 20)
            assert back.got == [*range(100), 200]  # the 20 again, then the 80 queued, in order
        finally:
            back.close()
    assert f"queue of client {cid} is full (100 messages): 1 dropped so far" in caplog.text
    assert f"queue of client {cid} has room again; 50 messages were dropped while it was full" in caplog.text


def test_a_message_acknowledged_while_a_resumed_session_is_re_sent_to_is_not_sent_again():
    sent: list[tuple[int, bool]] = []

    async def run() -> None:
        session = Session()
        session.client_id = "resumed"
        for i in (1, 2, 3):
            session.inflight_out[i] = OutgoingApplicationMessage(i, "t/x", QOS_1, str(i).encode(), False)
        handler = DurableProtocolHandler(None, session)

        async def send(packet) -> None:
            sent.append((packet.packet_id, packet.dup_flag))
            if packet.packet_id == 1:  # the PUBACK of 2 is read while 1 is written
                del session.inflight_out[2]
            await asyncio.sleep(0)

        handler._send_packet = send
        await handler._retry_deliveries()

    asyncio.run(run())
    assert sent == [(1, True), (3, True)]
