"""Helpers for ingest tests: run the real ingest process, publish, read Kafka topics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer

from citybrain.settings import Settings

TINY = Path(__file__).parent / "data" / "tiny_city.yaml"


def start_ingest(settings: Settings, log: Path) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env()}
    proc = subprocess.Popen([sys.executable, "-m", "ingest"], env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    stats = settings.run_dir / "ingest.json"
    while not stats.exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "ingest did not start: " + log.read_text()[-3000:]
        time.sleep(0.1)
    time.sleep(0.5)  # subscriptions in place
    return proc


def publisher(settings: Settings, client_id: str = "test-pub") -> mqtt.Client:
    host, port = settings.mqtt
    proto = mqtt.MQTTv5 if settings.mqtt_protocol == "5" else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
    c.max_inflight_messages_set(500)
    c.connect(host, port)
    c.loop_start()
    return c


def consume(settings: Settings, name: str, until, timeout: float = 30.0) -> list[dict]:
    """Read ``{prefix}.{name}`` from the start until ``until(records)`` is true or timeout."""
    async def go():
        c = AIOKafkaConsumer(settings.topic(name), bootstrap_servers=settings.kafka, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
        await c.start()
        out: list[dict] = []
        try:
            deadline = time.time() + timeout
            while time.time() < deadline and not until(out):
                batch = await c.getmany(timeout_ms=300)
                for msgs in batch.values():
                    out.extend(json.loads(m.value) for m in msgs)
        finally:
            await c.stop()
        return out

    return asyncio.run(go())


def stats(settings: Settings) -> dict:
    return json.loads((settings.run_dir / "ingest.json").read_text())


def wait_for(pred, timeout: float = 30.0, every: float = 0.1):
    """Poll ``pred`` until it returns something truthy (returned) or fail after ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s")
