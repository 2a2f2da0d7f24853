"""QoS 1 delivery that survives a subscriber's death, for the embedded amqtt broker.

Ingest acknowledges an MQTT message only after Kafka acknowledged its record, on a persistent
session, so that a kill -9 of ingest loses nothing: the broker must keep every QoS 1 message it
delivered until the PUBACK comes, re-send it when the same client id reconnects with
clean_session False, and queue what arrives meanwhile [MQTT-4.4.0-1, 3.1.2.4]. Stock amqtt
0.12.1 (what this targets; pinned in pyproject.toml since it overrides amqtt internals) does none
of that reliably:

- ``ProtocolHandler._handle_qos1_message_flow`` drops a delivered message from
  ``session.inflight_out`` when its PUBACK wait ends for ANY reason: the connection closing
  (``_stop_waiters`` cancels the waiter) or 5 s without a PUBACK (ingest holds acks that long
  while Kafka is down). So ``_retry_deliveries`` on reconnect finds nothing to re-send
  (Yakifo/amqtt issue #401, fix proposed in PR #402, both open).
- ``AnonymousAuthPlugin`` flags sessions anonymous, and the broker neither queues QoS 1 messages
  for a disconnected anonymous session nor keeps it (``_session_monitor`` deletes it within 1 s):
  the embedded broker is anonymous by default (see ``citybrain.amqtt_plugins``).
- Nothing bounds the in-flight window, and messages queued for an offline session are sent
  back with the retain flag set and waited on before the session's SUBSCRIBEs are served.
- A persistent CONNECT within the second after a clean session of the same client id ended
  resumes that clean session (session present, still flagged clean), which is then forgotten,
  with what arrived for it, at the next disconnect.
- A persistent session that expires (``session_expiry_interval``, 1 h in citybrain) or is
  there when the broker stops goes with whatever it still owed its client, without a word.

:class:`DurableBroker` replaces that with one outbox per session (``session.attributes``): QoS 1
messages are queued there, a pump per connection sends them while fewer than
:data:`MAX_INFLIGHT` wait for a PUBACK, and a message leaves ``inflight_out`` only on its PUBACK.
On reconnect the unacknowledged ones go out again first (same packet ids, DUP set), then the
outbox. A leftover clean session is not resumed, and a discarded persistent session is logged
with the count of what it still owed. QoS 0 and QoS 2 keep amqtt's own flows (citybrain
publishes and subscribes at QoS 1).
The broker itself stays in memory: a kill -9 of the broker process loses what it held.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from amqtt.broker import Broker
from amqtt.errors import ProtocolHandlerError
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import OUTGOING, OutgoingApplicationMessage, Session

log = logging.getLogger(__name__)

#: PUBLISHes awaiting a PUBACK per session. Ingest acknowledges a batch (up to batch_max = 2,000)
#: once Kafka has it and keeps up to 4 batches in flight: a smaller window starves it, as
#: Mosquitto's default of 20 does. Also keeps packet ids (65,535) from running out.
MAX_INFLIGHT = 10_000
#: messages held per session, in flight or waiting beyond the window (Mosquitto's
#: max_queued_messages in deploy/mosquitto/mosquitto.conf); past it newer ones are dropped,
#: counted and logged (as Mosquitto does; MQTT 3.1.1 has no way to refuse one). ~390 bytes each
#: with a 200-byte payload (measured with tracemalloc), so ~0.4 GB for a full queue, held until
#: the client returns or its session expires (citybrain.brokers.SESSION_EXPIRY_S)
MAX_QUEUED = 1_000_000
_OUTBOX = "citybrain.outbox"
_DROPPED = "citybrain.dropped"  # dropped since the session began
_DROPPING = "citybrain.dropping"  # dropped since the queue was last not full


def outbox(session: Session) -> deque[OutgoingApplicationMessage]:
    """QoS 1 messages owed to ``session`` and not yet sent (kept across its connections)."""
    return session.attributes.setdefault(_OUTBOX, deque())


def enqueue(session: Session, topic: str, data: bytes | bytearray, retain: bool) -> OutgoingApplicationMessage:
    message = OutgoingApplicationMessage(None, topic, QOS_1, data, retain)
    box, attrs = outbox(session), session.attributes
    if len(box) + len(session.inflight_out) >= MAX_QUEUED:
        attrs[_DROPPED] = attrs.get(_DROPPED, 0) + 1
        dropping = attrs[_DROPPING] = attrs.get(_DROPPING, 0) + 1
        if dropping == 1 or dropping % 10_000 == 0:
            log.warning("mqtt: queue of client %s is full (%d messages): %d dropped so far",
                        session.client_id, MAX_QUEUED, dropping)
        return message
    if attrs.get(_DROPPING):  # the total of the episode, which the warnings above only sample
        log.warning("mqtt: queue of client %s has room again; %d messages were dropped while it was full",
                    session.client_id, attrs.pop(_DROPPING))
    box.append(message)
    return message


class DurableProtocolHandler(BrokerProtocolHandler):
    """One client connection: QoS 1 out through the session's outbox, forgotten only on PUBACK."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._more = asyncio.Event()
        self._pump_task: asyncio.Task | None = None

    async def mqtt_publish(self, topic, data, qos, retain, ack_timeout=None):
        if qos != QOS_1 or self.session is None:
            return await super().mqtt_publish(topic, data, qos, retain, ack_timeout)
        message = enqueue(self.session, topic, data, retain)
        self.kick()
        return message

    def kick(self) -> None:
        """Something to send or a slot freed: wake the pump (a no-op once stopped)."""
        self._more.set()

    async def start(self) -> None:
        await super().start()  # re-sends the unacknowledged (_retry_deliveries) first
        self._pump_task = asyncio.create_task(self._pump(self.session))

    async def stop(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()  # what it was sending is in inflight_out: re-sent on reconnect
        await super().stop()

    async def _retry_deliveries(self) -> None:
        """[MQTT-4.4.0-1]: every unacknowledged QoS 1 PUBLISH again, in order, same id, DUP set,
        without waiting for its PUBACK (a PUBACK may take as long as the client likes). QoS 2
        flows as amqtt does them."""
        session = self.session
        for message in list(session.inflight_out.values()):
            # a PUBACK read meanwhile (a client may ack on this connection what it got on the
            # last) took it out: re-sent, it would be a duplicate and an ack for an unknown id
            if message.qos == QOS_1 and session.inflight_out.get(message.packet_id) is message:
                await self._send_packet(message.build_publish_packet(dup=True))
        others = [m for m in (*session.inflight_in.values(), *session.inflight_out.values()) if m.qos != QOS_1]
        if others:
            await asyncio.wait([asyncio.create_task(asyncio.wait_for(self._handle_message_flow(m), 10))
                                for m in others])

    async def _pump(self, session: Session) -> None:
        box, inflight = outbox(session), session.inflight_out
        try:
            while True:
                self._more.clear()
                while box and len(inflight) < MAX_INFLIGHT:
                    message = box.popleft()
                    message.packet_id = session.next_packet_id
                    inflight[message.packet_id] = message  # before the write: a lost write is re-sent
                    await self._send_packet(message.build_publish_packet())
                await self._more.wait()
        except (asyncio.CancelledError, ProtocolHandlerError):
            pass  # stopped (amqtt turns a cancelled write into ProtocolHandlerError)
        except Exception:  # noqa: BLE001 - the queue stays; the next connection sends it
            log.exception("mqtt: sending to client %s failed", session.client_id)

    async def handle_puback(self, puback) -> None:
        session, packet_id = self.session, puback.variable_header.packet_id
        message = session.inflight_out.get(packet_id) if session else None
        if message is None or message.qos != QOS_1 or message.direction != OUTGOING:
            return await super().handle_puback(puback)
        message.puback_packet = puback
        del session.inflight_out[packet_id]  # acknowledged: only now is it the client's
        self.kick()
        return None


class DurableBroker(Broker):
    """amqtt's broker with :class:`DurableProtocolHandler` connections, queueing QoS 1 messages
    for a disconnected persistent session in its outbox."""

    async def _initialize_client_session(self, reader, writer, remote_address, remote_port):
        handler, session = await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        if session.parent and session.clean_session:
            # a CONNECT to resume (a clean one deletes the old session first) found a clean
            # session that ended with its connection [MQTT-3.1.2-6] but that amqtt removes only
            # within the second: amqtt would resume it, session present, still flagged clean, so
            # forgotten again at this client's next disconnect with what arrives meanwhile
            # (what it owed the client goes; what the client published and was acked for stays
            # in delivered_message_queue, which this connection's loop then broadcasts)
            await self._del_all_subscriptions(session)
            while not session.retained_messages.empty():
                session.retained_messages.get_nowait()
            session.inflight_out.clear()
            outbox(session).clear()
            session.attributes.pop(_DROPPING, None)
            session.clean_session, session.parent = False, 0
        # amqtt builds a stateless BrokerProtocolHandler from CONNECT; ours takes its place
        return DurableProtocolHandler(self.plugins_manager, loop=self._loop), session

    async def _cleanup_session(self, client_id: str) -> None:
        """amqtt forgets an expired persistent session (``session_expiry_interval``, or the broker
        stopping) with whatever it still owed the client: said, with how much, not silently."""
        session = self._sessions.get(client_id, (None, None))[0]
        if session is not None and not session.clean_session:
            sent = sum(1 for m in session.inflight_out.values() if m.qos == QOS_1)
            queued = len(outbox(session))
            if sent or queued:
                log.warning("mqtt: session of client %s discarded with %d QoS 1 messages the client never "
                            "acknowledged (%d sent, %d not yet sent)", client_id, sent + queued, sent, queued)
        await super()._cleanup_session(client_id)

    async def _retain_broadcast_message(self, broadcast, qos, target_session) -> None:
        if qos != QOS_1:
            return await super()._retain_broadcast_message(broadcast, qos, target_session)
        enqueue(target_session, broadcast["topic"], broadcast["data"], retain=False)  # [MQTT-3.3.1-9]
        handler = self._get_handler(target_session)
        if isinstance(handler, DurableProtocolHandler):
            handler.kick()  # a live connection amqtt thinks is gone (take-over) still sends it
        return None
