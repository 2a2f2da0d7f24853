"""MQTT client construction shared by every stage (paho-mqtt 2.x).

MQTT 5 by default (shared subscriptions, session expiry); 3.1.1 for brokers that speak only
that (the embedded amqtt broker), chosen by ``Settings.mqtt_protocol``.
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt

from citybrain.settings import Settings

log = logging.getLogger(__name__)


def is_v5(settings: Settings) -> bool:
    return settings.mqtt_protocol.strip() in {"5", "5.0", "v5"}


def make_client(settings: Settings, client_id: str, *, clean_start: bool = True,
                manual_ack: bool = False) -> mqtt.Client:
    """A paho client configured from settings; call :func:`connect` next.

    ``clean_start=False`` with a fixed ``client_id`` keeps a persistent session so that QoS 1
    messages published while the client was away are delivered when it returns.
    """
    if is_v5(settings):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                        manual_ack=manual_ack)
    else:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                        clean_session=clean_start, manual_ack=manual_ack)
    if settings.mqtt_username:
        c.username_pw_set(settings.mqtt_username, settings.mqtt_password.get() or None)
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
