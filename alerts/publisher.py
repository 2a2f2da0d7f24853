"""MQTT publisher for incidents and dispatches (QoS 1, reconnecting, never raising)."""

from __future__ import annotations

import logging

from citybrain import mqtt
from citybrain.settings import Settings

log = logging.getLogger(__name__)


class MqttPublisher:
    """paho client with its own network thread; QoS 1 messages queue while reconnecting."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self.client = mqtt.make_client(settings, client_id)
        self.client.max_queued_messages_set(100_000)
        mqtt.connect(self.client, settings)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False):
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
