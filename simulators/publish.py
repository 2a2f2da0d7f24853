"""Publishing feeds like real devices: QoS 1 through a small pool of MQTT connections.

Thousands of devices with one connection each would exhaust a test broker; a pool of
connections (devices hashed onto them, so one device's messages stay in order on one
connection) gives the same traffic. Pacing follows event time divided by ``speed``, so speed
changes when messages are sent, never what they say.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import zlib
from collections.abc import Iterable

from citybrain import mqtt
from citybrain.settings import Settings
from simulators.feed import Message

log = logging.getLogger(__name__)


class Pool:
    """MQTT connections for a fleet of simulated devices.

    A small city (up to ``PER_DEVICE_MAX`` devices) gets one connection per device, each with
    its own last will (``city/devices/{id}/status`` = ``offline``, retained), exactly like real
    devices. A big one shares ``size`` connections (devices hashed onto them, so one device's
    messages stay in order); there a dropped connection cannot announce every device offline.
    """

    PER_DEVICE_MAX = 200

    def __init__(self, settings: Settings, size: int = 4, name: str = "citybrain-sim",
                 devices: list[str] | None = None) -> None:
        self.settings, self.name = settings, name
        self.by_device: dict[str, object] = {}
        self.clients = []
        stamp = int(time.time() * 1000) % 100000
        if devices and len(devices) <= self.PER_DEVICE_MAX:
            for dev in devices:
                self.by_device[dev] = self._connect(f"{name}-{dev}-{stamp}", will=dev)
            self.clients = list(self.by_device.values())
        else:
            self.clients = [self._connect(f"{name}-{k}-{stamp}") for k in range(size)]
        self.sent = 0

    def _connect(self, client_id: str, will: str | None = None):
        c = mqtt.make_client(self.settings, client_id)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        if will:
            c.will_set(f"city/devices/{will}/status", b"offline", qos=1, retain=True)
        mqtt.connect_and_wait(c, self.settings)
        return c

    def publish(self, m: Message):
        parts = m.topic.split("/")
        c = self.by_device.get(parts[2]) if len(parts) > 2 and self.by_device else None
        if c is None:
            c = self.clients[zlib.crc32(m.topic.encode()) % len(self.clients)]
        self.sent += 1
        return c.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)

    def close(self, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        for c in self.clients:
            while c._out_messages and time.time() < deadline:  # let QoS 1 messages be acknowledged
                time.sleep(0.05)
            c.loop_stop()
            c.disconnect()


class Pacer:
    """Sleeps so that event time t is published at wall time (t - t0) / speed; pause on SIGUSR1.

    ``live``: never before t on the wall clock either. A generated feed faster than real time
    catches up with the clock and then runs at its pace (ingest rejects event times ahead of it).
    """

    def __init__(self, speed: float, live: bool = False) -> None:
        self.speed, self.live = speed, live
        self.t0: float | None = None
        self.wall0 = 0.0
        self.resumed = threading.Event()
        self.resumed.set()
        self.paused_for = 0.0

    def wait(self, t: float, stop: threading.Event) -> None:
        if self.t0 is None:
            self.t0, self.wall0 = t, time.monotonic()
        if not self.resumed.is_set():
            p = time.monotonic()
            while not self.resumed.wait(0.2) and not stop.is_set():
                pass
            self.paused_for += time.monotonic() - p
        delay = self.wall0 + self.paused_for + (t - self.t0) / self.speed - time.monotonic() if self.speed > 0 else 0.0
        if self.live:
            delay = max(delay, t - time.time())
        if delay > 0:
            stop.wait(delay)


def publish_feed(settings: Settings, messages: Iterable[Message], speed: float, stop: threading.Event | None = None,
                 progress_total: int | None = None, pool_size: int = 4, devices: list[str] | None = None,
                 live: bool = False) -> dict:
    """Publish until the feed ends or ``stop`` (``live``: see :class:`Pacer`); returns a summary."""
    stop = stop or threading.Event()
    pool = Pool(settings, pool_size, devices=devices)
    pacer = Pacer(speed, live)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, lambda *_: pacer.resumed.clear())
        signal.signal(signal.SIGUSR2, lambda *_: pacer.resumed.set())
    started = time.monotonic()
    first = last = None
    try:
        for m in messages:
            if stop.is_set():
                break
            pacer.wait(m.t, stop)
            pool.publish(m)
            first = first if first is not None else m.t
            last = m.t
            if progress_total and pool.sent % 500 == 0:
                sys.stderr.write(f"\r{pool.sent}/{progress_total} messages ({100 * pool.sent / progress_total:.0f}%)")
    finally:
        pool.close()
    if progress_total:
        sys.stderr.write("\n")
    wall = time.monotonic() - started
    return {"messages": pool.sent, "wall_s": round(wall, 2), "event_span_s": (last - first) if first else 0.0,
            "rate": round(pool.sent / wall, 1) if wall else 0.0}
