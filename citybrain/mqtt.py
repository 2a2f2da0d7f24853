"""MQTT client construction shared by every stage (paho-mqtt 2.x).

MQTT 5 by default (shared subscriptions, session expiry); 3.1.1 for brokers that speak only
that (the embedded amqtt broker), chosen by ``Settings.mqtt_protocol``.
"""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt

from citybrain.exceptions import BrokerRefused
from citybrain.settings import Settings

log = logging.getLogger(__name__)


def is_v5(settings: Settings) -> bool:
    return settings.mqtt_v5


def make_client(settings: Settings, client_id: str, *, clean_start: bool = True,
                manual_ack: bool = False, client_class: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    """A paho client configured from settings; call :func:`connect` next.

    ``clean_start=False`` with a fixed ``client_id`` keeps a persistent session so that QoS 1
    messages published while the client was away are delivered when it returns.
    ``client_class``: a paho ``Client`` subclass (ingest's burst client), stock paho otherwise.
    """
    if is_v5(settings):
        c = client_class(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    else:
        c = client_class(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                         clean_session=clean_start, manual_ack=manual_ack)
    if settings.mqtt_username:
        c.username_pw_set(settings.mqtt_username, settings.mqtt_password.get() or None)
    if settings.mqtt_tls:  # the CA file, or the system's trusted CAs for mqtts:// without one
        c.tls_set(ca_certs=settings.mqtt_tls_ca or None)
    c.reconnect_delay_set(min_delay=1, max_delay=30)
    c._citybrain_clean_start = clean_start  # read by connect()
    return c


def connect(client: mqtt.Client, settings: Settings, *, session_expiry_s: int = 3600, keepalive: int = 30) -> None:
    """Connect (blocking until the TCP connect returns); persistent session when asked."""
    host, port = settings.mqtt
    if not is_v5(settings):
        client.connect(host, port, keepalive=keepalive)
        return
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    clean = getattr(client, "_citybrain_clean_start", True)
    props = Properties(PacketTypes.CONNECT)
    if not clean:
        props.SessionExpiryInterval = session_expiry_s
    client.connect(host, port, keepalive=keepalive, clean_start=clean, properties=props)


def connect_and_wait(client: mqtt.Client, settings: Settings, timeout: float = 10.0, **kw) -> None:
    """Connect, start the network loop, and wait for the broker's answer.

    For commands a person runs (simulate, replay, record): a broker that refuses the connection
    (bad user name or password, not authorised) is an error that says so, instead of a run that
    publishes into the void.
    """
    answered = threading.Event()
    answer: list = []
    previous = client.on_connect

    def on_connect(c, userdata, flags, reason_code, properties=None):
        answer.append(reason_code)
        answered.set()
        if previous:
            previous(c, userdata, flags, reason_code, properties)

    client.on_connect = on_connect
    host, port = settings.mqtt
    connect(client, settings, **kw)
    client.loop_start()
    if not answered.wait(timeout):
        client.loop_stop()
        raise BrokerRefused(f"the MQTT broker at {host}:{port} did not answer within {timeout:.0f} s")
    if answer[0].is_failure:
        client.loop_stop()
        hint = " (check CITYBRAIN_MQTT_USERNAME / CITYBRAIN_MQTT_PASSWORD)" if answer[0].value in (4, 5, 134, 135) else ""
        raise BrokerRefused(f"the MQTT broker at {host}:{port} refused client {client._client_id.decode()!r}: "
                            f"{answer[0]}{hint}")
