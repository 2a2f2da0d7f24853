"""The Faust worker: a thin shell that feeds the pure core and produces what it returns.

One agent consumes ``signals`` (one SignalBatch per record, partitioned by grid), hands each
batch to :class:`~streams.core.StreamCore` with its partition, produces warnings (key = grid)
and dead letters, and checkpoints the core's changed per-source state to a state topic (key =
partition/source, the partition of the input; one key per changed fusion situation): a changelog
we own. A worker given a partition
(at start or on a rebalance) reads that partition's changelog to its end before its first batch
and rebuilds the core's state for it. Faust's windowed tables are not
used on purpose (they close windows on the wall clock; the core closes them on event time), and
neither is a plain Faust table: with tansu and the memory store its recovery was not reliable
before the first event, which a restart test showed.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import faust
import orjson
from faust.transport.drivers import aiokafka as faust_kafka

from citybrain.city import load_city
from citybrain.health import write_stats
from citybrain.kafka import STATE_TOPIC, ensure_topics
from citybrain.logs import truncate
from citybrain.records import SignalBatch
from citybrain.settings import Settings
from streams.core import StreamCore

log = logging.getLogger(__name__)

#: wall seconds between checkpoints of a partition's learned state (episode changes go at once)
CHECKPOINT_S = 5.0


#: how long the broker may hold a fetch when nothing new is there. Faust hard-codes 1500 ms, and
#: tansu answers a waiting fetch at that deadline rather than when a record arrives, so a batch
#: that landed just after a fetch went out waited up to 1.5 s (see docs/BENCHMARKS.md, whole system)
FETCH_WAIT_MS = 20


class _PromptFetchThread(faust_kafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS  # read by aiokafka's fetcher when it starts
        return consumer


class _PromptFetchConsumer(faust_kafka.Consumer):
    """Faust's aiokafka consumer with :data:`FETCH_WAIT_MS` instead of its fixed 1500 ms."""

    def _new_consumer_thread(self) -> _PromptFetchThread:
        return _PromptFetchThread(self, loop=self.loop, beacon=self.beacon)


def app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}-streams"


def changelog_topic(settings: Settings) -> str:
    """The state changelog (created before the app starts, partitioned like ``signals``)."""
    return settings.topic(STATE_TOPIC)


async def load_state(settings: Settings, partitions: list[int] | None = None) -> dict[int, dict[str, object]]:
    """Read the state changelog to its end: {partition: {key: latest value}} (None = no state)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = changelog_topic(settings)
    cons = AIOKafkaConsumer(bootstrap_servers=settings.kafka, group_id=None, enable_auto_commit=False,
                            max_partition_fetch_bytes=16 << 20)
    await cons.start()
    out: dict[int, dict[str, object]] = {}
    try:
        tps = [TopicPartition(topic, p) for p in (range(settings.partitions) if partitions is None else partitions)]
        cons.assign(tps)
        await cons.seek_to_beginning(*tps)
        ends = await cons.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            for tp, recs in (await cons.getmany(*todo, timeout_ms=1000)).items():
                for r in recs:
                    try:
                        out.setdefault(tp.partition, {})[r.key.decode().split("/", 1)[1]] = json.loads(r.value)
                    except (ValueError, IndexError, AttributeError) as e:
                        log.warning("bad state record %s: %s", e, truncate(r.value or b""))
                if recs and recs[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
    finally:
        await cons.stop()
    return out


def decode_batch(value: bytes | None) -> SignalBatch:
    """``SignalBatch.decode`` with orjson (~3x faster on a 2,000-reading batch); what orjson
    refuses but the standard parser takes (NaN literals, say) goes through ``SignalBatch.decode``."""
    try:
        d = orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError):
        return SignalBatch.decode(value)
    if not isinstance(d, dict):
        raise TypeError(f"a signal batch is a JSON object, not {type(d).__name__}")
    return SignalBatch.from_dict(d)


def build_app(settings: Settings, core: StreamCore) -> faust.App:
    """The Faust app, its agent, state changelog and heartbeat timer (not started)."""
    app = faust.App(
        app_id(settings), broker=f"kafka://{settings.kafka}", store="memory://", web_enabled=False,
        topic_partitions=settings.partitions, topic_replication_factor=1, topic_allow_declare=False,
        consumer_auto_offset_reset="earliest", broker_session_timeout=10.0, broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=10.0, broker_commit_every=1000, broker_commit_interval=1.0,
        stream_wait_empty=False, table_standby_replicas=0, producer_linger_ms=5,
        consumer_max_fetch_size=16 << 20, broker_max_poll_records=None,
        # a full checkpoint is ~500 records of ~8 KB to one partition: in aiokafka's 16 KB batches
        # each send waited for the batch before it to go out, blocking the agent ~110 ms per
        # checkpoint on an idle tansu (8 MB batches: ~4 ms), more under load
        producer_max_batch_size=8 << 20, producer_max_request_size=8 << 20,
    )
    app.transport.Consumer = _PromptFetchConsumer
    signals = app.topic(settings.topic("signals"), key_serializer="raw", value_serializer="raw",
                        partitions=settings.partitions)
    warnings_topic = settings.topic("warnings")
    deadletter = app.topic(settings.topic("deadletter"), key_serializer="raw", value_serializer="raw")
    state_topic = changelog_topic(settings)
    last_ckpt: dict[int, float] = {}
    offsets: dict[int, int] = {}
    owned: set[int] = set()
    reload: set[int] = set()  # partitions newly assigned: their state comes from the changelog first

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Another worker may have moved these partitions' state on since we last read it (it
        owned them; it died or left): reload their state before their next batch."""
        now_owned = {tp.partition for tp in assigned if tp.topic == settings.topic("signals")}
        reload.update(now_owned - owned)
        owned.clear()
        owned.update(now_owned)

    async def take_over(p: int) -> None:
        reload.discard(p)
        items = (await load_state(settings, [p])).get(p, {})
        core.parts.pop(p, None)
        last_ckpt.pop(p, None)
        log.info("partition %d assigned: restored %d sources from %s", p, core.restore(p, items),
                 changelog_topic(settings))
    busy = core.timing  # seconds spent in the core and in checkpoints (where a worker's time goes)
    #: wall time (epoch s) the first batch was taken and the latest one done: a worker's own
    #: throughput is readings / (busy_to - busy_from), whatever its start-up took
    span: dict[str, float] = {}

    async def reject(value: bytes | None, reason: str, detail: str) -> None:
        """A whole record the core cannot take: counted and kept as a dead letter, never a crash."""
        core.counts["bad_events"] += 1
        dl = core._dead(truncate(value or b"", 10_000), reason, detail, None)
        await deadletter.send(key=b"signals", value=dl.encode())

    @app.agent(signals)
    async def detect(stream: Any) -> None:
        async for event in stream.events():
            span.setdefault("busy_from", time.time())
            await handle(event)
            span["busy_to"] = time.time()

    async def handle(event: Any) -> None:
        """One SignalBatch: decode, the core, its outputs and checkpoint produced."""
        p = event.message.partition
        offsets[p] = event.message.offset
        if p in reload:
            await take_over(p)
        try:
            batch = decode_batch(event.value)
        except (ValueError, TypeError, KeyError) as e:
            log.warning("undecodable signal batch: %s %s", e, truncate(event.value or b""))
            await reject(event.value, "bad_batch", str(e))
            return
        t0 = time.perf_counter()
        try:
            out = core.process(p, batch)
        except Exception as e:  # a bug on one batch must not stop the city's detection
            log.exception("batch at partition %d offset %d failed", p, event.message.offset)
            await reject(event.value, "processing_error", repr(e))
            return
        log.debug("partition %d offset %d: %d readings -> %d warnings", p, event.message.offset, len(batch.t),
                  len(out.warnings))
        busy["process_s"] += time.perf_counter() - t0
        for w in out.warnings:  # straight to the producer, as the checkpoints below
            await app.producer.send(warnings_topic, w.grid.encode(), w.encode(), None, None, None)
        for d in out.dead_letters:
            await deadletter.send(key=(d.device or d.topic).encode(), value=d.encode())
        now = time.monotonic()
        full = now - last_ckpt.get(p, 0.0) >= CHECKPOINT_S
        if full or core.needs_checkpoint(p):
            if full:
                last_ckpt[p] = now
            t0 = time.perf_counter()
            for k, v in core.checkpoint(p, full).items():
                # straight to the producer (flushed before each commit, as Faust's sends are):
                # Topic.send costs ~100 us a record, and a checkpoint is a record per changed source
                await app.producer.send(state_topic, f"p{p}/{k}".encode(), json.dumps(v).encode(), p, None, None)
            busy["checkpoint_s"] += time.perf_counter() - t0

    @app.timer(interval=1.0)
    async def heartbeat() -> None:
        write_stats(settings.run_dir, "streams", stats(app, core, offsets))

    app.streams_core, app.streams_offsets = core, offsets  # for the final stats, tests and the bench
    app.streams_span = span
    return app


def stats(app: faust.App, core: StreamCore, offsets: dict[int, int]) -> dict[str, Any]:
    lag = 0
    try:
        for tp in app.consumer.assignment():
            if tp.topic.endswith(".signals"):
                hw = app.consumer.highwater(tp) or 0
                lag += max(0, hw - (offsets.get(tp.partition, -1) + 1))
    except Exception as e:  # noqa: BLE001 - a heartbeat must never die on a consumer detail
        log.debug("lag unavailable: %s", e)
    c = core.counts
    return {"state": "up", "lag": lag, "readings": c["readings"], "events": c["events"], "warnings": c["warnings"],
            "late": c["late"], "too_late": c["too_late"], "duplicates": c["duplicates"],
            "bad_events": c["bad_events"], **{k: round(v, 3) for k, v in core.timing.items()},
            **getattr(app, "streams_span", {}), "watermark": {str(p): t for p, t in core.watermarks().items()}}


def run(settings: Settings, loglevel: str = "WARNING") -> None:
    """Ensure topics (incl. the changelog), start the Faust worker, return when it stops."""
    ensure_topics(settings, extra=[changelog_topic(settings)])
    core = StreamCore(settings, load_city(settings.city_file))  # state comes per partition on assignment
    app = build_app(settings, core)
    write_stats(settings.run_dir, "streams", {"state": "starting", "lag": 0, "readings": 0, "warnings": 0})
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    write_stats(settings.run_dir, "streams", {**stats(app, core, app.streams_offsets), "state": "down"})
