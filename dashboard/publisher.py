"""An MQTT publisher for the incident service facade used by the command center.

Why the command center publishes itself: an operator's dispatch must reach the unit (CAP over
``city/units/{id}/dispatch``) through the same facade code as automatic actions, and the facade
publishes through whatever ``publisher`` it is given. paho queues QoS 1 messages while the
connection is (re)established, so a dispatch made during a broker blip is sent when it returns.
"""

from __future__ import annotations

import logging
import uuid

from citybrain import mqtt
from citybrain.settings import Settings

log = logging.getLogger(__name__)


class MqttPublisher:
    """``publish(topic, payload, qos=1, retain=False)`` over one background paho connection."""

    def __init__(self, settings: Settings, client_id: str | None = None) -> None:
        self.client = mqtt.make_client(settings, client_id or f"citybrain-dashboard-{uuid.uuid4().hex[:8]}")
        self.client.max_queued_messages_set(10_000)
        host, port = settings.mqtt
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != 0:
            log.warning("publish to %s queued with rc=%s", topic, info.rc)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
