"""The incident service process: warnings and unit reports from Kafka, timers, MQTT out.

Offsets are committed only after the store has the change, so a crash replays the last
records; replays are harmless because handling a warning or a unit report is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiokafka import AIOKafkaConsumer

from alerts.api import IncidentService
from alerts.publisher import MqttPublisher
from citybrain import health
from citybrain.city import load_city
from citybrain.kafka import ensure_topics_async
from citybrain.logs import truncate
from citybrain.records import UnitStatus, Warning
from citybrain.settings import Settings

log = logging.getLogger("alerts")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    city = load_city(settings.city_file)
    await ensure_topics_async(settings)
    publisher = MqttPublisher(settings, f"citybrain-alerts-{os.getpid()}")
    svc = IncidentService(settings, city, publisher=publisher)
    consumer = AIOKafkaConsumer(settings.topic("warnings"), settings.topic("units"), bootstrap_servers=settings.kafka,
                                group_id=f"{settings.topic_prefix}-alerts", enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=10000, heartbeat_interval_ms=1000)
    await consumer.start()
    counts = {"warnings_in": 0, "unit_reports": 0, "bad_records": 0}

    async def timers() -> None:
        while True:
            try:
                await asyncio.to_thread(svc.tick)
                open_n = len(await asyncio.to_thread(svc.list_incidents, "open"))
                health.write_stats(settings.run_dir, "alerts", {"state": "up", **counts, "incidents_open": open_n})
            except Exception:  # noqa: BLE001 - timers never die
                log.exception("tick failed")
            await asyncio.sleep(1.0)

    timer_task = asyncio.create_task(timers())
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            for tp, msgs in batch.items():
                for m in msgs:
                    try:
                        if tp.topic == settings.topic("warnings"):
                            await asyncio.to_thread(svc.handle_warning, Warning.decode(m.value))
                            counts["warnings_in"] += 1
                        else:
                            await asyncio.to_thread(svc.handle_unit_status, UnitStatus.decode(m.value))
                            counts["unit_reports"] += 1
                    except (ValueError, KeyError, TypeError) as e:
                        counts["bad_records"] += 1
                        log.error("bad record on %s: %s (%s)", tp.topic, e, truncate(m.value))
            if batch:
                await consumer.commit()
    finally:
        timer_task.cancel()
        await consumer.stop()
        publisher.close()


def run(settings: Settings) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
