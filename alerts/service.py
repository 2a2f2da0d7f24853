"""The incident service process: warnings and unit reports from Kafka, timers, MQTT out.

Offsets are committed only after the store has the change, so a crash replays the last
records; replays are harmless because handling a warning or a unit report is idempotent. The
warnings of a fetch go to the store in one transaction (``IncidentService.handle_warnings``): a
storm of thousands costs a commit per fetch, not per warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

from aiokafka import AIOKafkaConsumer

from alerts.api import BAD_RECORD, IncidentService
from alerts.publisher import MqttPublisher
from citybrain import health
from citybrain.city import load_city
from citybrain.exceptions import StoreUnavailable
from citybrain.kafka import ensure_topics_async
from citybrain.logs import truncate
from citybrain.records import UnitStatus, Warning
from citybrain.settings import Settings

log = logging.getLogger("alerts")

#: how long the broker may hold a fetch of the (sparse) warnings topic when nothing is there.
#: tansu answers a waiting fetch at this deadline, not when a record arrives, so with aiokafka's
#: default (500 ms) a warning waited ~0.25 s on average before the service saw it (measured:
#: delivery p50 18 ms / max 416 ms at 500, p50 6 ms / max 12 ms at 10, one record every ~0.3 s)
FETCH_WAIT_MS = 20


class Stopping(Exception):
    """Shutdown was asked while a record waited for the store: it stays uncommitted in Kafka."""


class StoreGate:
    """Holds the consumer on the record it is at while the incident store is unavailable.

    Kafka is the buffer: nothing after the record is read and no offset is committed until the
    store has it, so an outage of PostgreSQL (or a full disk under SQLite) delays incidents and
    loses none. The outage shows in the component's health as ``degraded``. A shutdown (SIGTERM
    from ``citybrain up``) ends the wait at once with :class:`Stopping` instead of after the
    outage: the held record is read again by the next run.
    """

    def __init__(self, stop: asyncio.Event, max_backoff_s: float = 5.0) -> None:
        self.stop = stop
        self.down_since: float | None = None
        self.reason = ""
        self.outages = 0
        self.max_backoff_s = max_backoff_s

    async def call(self, fn, *args):
        backoff = 0.2
        while True:
            try:
                out = await asyncio.to_thread(fn, *args)
            except StoreUnavailable as e:
                if self.down_since is None:
                    self.down_since, self.outages = time.monotonic(), self.outages + 1
                    log.warning("%s; holding the input in Kafka and retrying", e)
                self.reason = str(e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), backoff)
                if self.stop.is_set():
                    raise Stopping from None
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if self.down_since is not None:
                log.warning("incident store back after %.1f s; catching up", time.monotonic() - self.down_since)
                self.down_since, self.reason = None, ""
            return out

    def health(self) -> dict:
        if self.down_since is None:
            return {"state": "up", "store_outages": self.outages}
        return {"state": "degraded", "store_outages": self.outages, "store_error": self.reason,
                "store_down_s": round(time.monotonic() - self.down_since, 1)}


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    city = load_city(settings.city_file)
    await ensure_topics_async(settings)
    publisher = MqttPublisher(settings, f"citybrain-alerts-{os.getpid()}")
    gate = StoreGate(stop)
    try:
        svc = await gate.call(lambda: IncidentService(settings, city, publisher=publisher))
    except Stopping:
        log.info("stopped while the incident store was unavailable")
        publisher.close()
        return
    consumer = AIOKafkaConsumer(settings.topic("warnings"), settings.topic("units"), bootstrap_servers=settings.kafka,
                                group_id=f"{settings.topic_prefix}-alerts", enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=10000, heartbeat_interval_ms=1000,
                                fetch_max_wait_ms=FETCH_WAIT_MS,
                                max_poll_interval_ms=3_600_000)  # a store outage may hold a record long
    await consumer.start()
    counts = {"warnings_in": 0, "unit_reports": 0, "bad_records": 0}
    open_n = 0

    async def timers() -> None:
        nonlocal open_n
        while True:
            try:
                if gate.down_since is None:
                    await asyncio.to_thread(svc.tick)
                    open_n = await asyncio.to_thread(svc.count_open)
            except StoreUnavailable as e:
                log.debug("tick skipped: %s", e)
            except Exception:  # noqa: BLE001 - timers never die
                log.exception("tick failed")
            health.write_stats(settings.run_dir, "alerts", {**gate.health(), **counts, "incidents_open": open_n})
            await asyncio.sleep(1.0)

    timer_task = asyncio.create_task(timers())
    warnings_topic = settings.topic("warnings")

    async def handle_warnings(run: list[tuple[Warning, bytes]]) -> None:
        """A run of warnings in one store transaction (a storm is one commit a fetch, not one a warning)."""
        if not run:
            return
        out = await gate.call(svc.handle_warnings, [w for w, _ in run])
        for k, err in out.failed:
            counts["bad_records"] += 1
            log.error("bad record on %s: %s (%s)", warnings_topic, err, truncate(run[k][1]))
        counts["warnings_in"] += len(run) - len(out.failed)

    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            run: list[tuple[Warning, bytes]] = []  # consecutive warnings (in the fetch's order)
            for tp, msgs in batch.items():
                if tp.topic != warnings_topic:
                    await handle_warnings(run)
                    run = []
                for m in msgs:
                    try:
                        if tp.topic == warnings_topic:
                            run.append((Warning.decode(m.value), m.value))
                        else:
                            await gate.call(svc.handle_unit_status, UnitStatus.decode(m.value))
                            counts["unit_reports"] += 1
                    except BAD_RECORD as e:
                        counts["bad_records"] += 1
                        log.error("bad record on %s: %s (%s)", tp.topic, e, truncate(m.value))
            await handle_warnings(run)
            if batch:  # after the store has all of it: a crash before replays the fetch (idempotent)
                await consumer.commit()
    except Stopping:  # nothing of this batch committed: what was stored is replayed (idempotent)
        log.info("stopped while the incident store was unavailable; the held input stays in Kafka")
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
