"""Detection throughput of the streams stage, through a real Faust worker and a real broker.

Runs, in one go, against a private tansu broker:
1. the streams worker (``python -m streams``) on columnar SignalBatches: readings/s per worker;
2. a per-event Faust agent (one Kafka record per reading, the style of Faust's examples) running
   the same detector monitors: readings/s;
3. the pure core without a broker, and NAB mode (points/s), for reference.

Steps 1 and 3 run once per stream-core engine (``--engines scalar,vector``: one numpy SensorBank
per partition vs one scalar Monitor per device), each on its own topics, in the same run.

Usage: python bench/bench_detect.py [--readings N] [--devices D] [--engines scalar,vector] [--feed city|n50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from citybrain.brokers import tansu_command
from citybrain.city import load_city
from citybrain.kafka import ensure_topics, partition_for
from citybrain.records import Reading, SignalBatch
from citybrain.settings import Settings
from citybrain.shared import nab_data

T0 = 1_795_339_200.0
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: the realistic feed's anomalies: this many sensors with limits go above their alarm limit for
#: ANOMALY_MIN minutes each, one after the other
ANOMALIES, ANOMALY_MIN = 10, 20


def feed(settings: Settings, n: int, devices: int, batch: int = 2000, kind: str = "city"
         ) -> dict[int, list[SignalBatch]]:
    """Readings of ``devices`` sensors, one per minute each, cut into batches per partition.

    ``kind="city"``: each sensor's normal day (``simulators.model.normal_value``, its level and
    daily rhythm, unrounded noise), inside its limits, except ANOMALIES sensors that each cross
    their alarm limit for ANOMALY_MIN minutes. ``kind="n50"`` (the feed before 2026-12-02): N(50, 1)
    for every sensor, which puts the water-level and rainfall sensors above their alarm limits
    for the whole run, so nearly every batch moves some episode (an urgent checkpoint).
    """
    from simulators.model import normal_value

    city = load_city(settings.city_file)
    sensors = [d for d in city.devices.values() if d.kind != "camera"][:devices]
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, n)
    minutes = max(1, n // len(sensors))
    limited = [i for i, d in enumerate(sensors) if d.limit("alarm") is not None]
    anomaly = {limited[k * len(limited) // ANOMALIES]: (minutes * (k + 1) // (ANOMALIES + 1))
               for k in range(min(ANOMALIES, len(limited)))}  # sensor -> minute its anomaly starts
    rows: dict[int, list[tuple]] = {}
    for i in range(n):
        k = i % len(sensors)
        d, minute = sensors[k], i // len(sensors)
        t = T0 + 60.0 * minute
        if kind == "n50":
            v = 50.0 + float(noise[i])
        else:
            v = normal_value(d.kind, t, float(noise[i]))
            if 0 <= minute - anomaly.get(k, n) < ANOMALY_MIN:
                v = d.limit("alarm") * 1.2
        rows.setdefault(partition_for(d.area, settings.partitions), []).append(
            (d.id, d.kind, d.area, t, v, f"{d.id}|{t}"))
    out: dict[int, list[SignalBatch]] = {}
    for p, rs in rows.items():
        for i in range(0, len(rs), batch):
            c = rs[i:i + batch]
            out.setdefault(p, []).append(SignalBatch(*(tuple(r[k] for r in c) for k in range(6))))
    return out


async def produce(settings: Settings, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka, linger_ms=20, max_batch_size=1 << 20,
                            max_request_size=16 << 20)
    await prod.start()
    try:
        futs = [await prod.send(topic, v, key=k, partition=p) for p, k, v in records]
        await asyncio.gather(*futs)
    finally:
        await prod.stop()


def wait_count(path: Path, n: int, timeout: float = 600.0) -> float:
    """Seconds a worker was busy with its ``n`` readings, by its own clock, from its stats file.

    The worker stamps when it took its first record and finished its latest (``busy_from``,
    ``busy_to``), so neither its start-up (group join) nor the 1 s heartbeat period counts:
    watching the counter from outside was only good to +-1 s over a ~5 s run.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = json.loads(path.read_text())
        except (OSError, ValueError):
            st = {}
        if st.get("readings", 0) >= n:
            time.sleep(1.2)  # the next heartbeat has the stamp of the batch that reached n
            st = json.loads(path.read_text())
            return st["busy_to"] - st["busy_from"]
        time.sleep(0.05)
    raise TimeoutError(f"{path} never reached {n}")


def run_process(args: list[str], settings: Settings, log: Path) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, *args], env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---------------------------------------------------------------------- the per-event agent


def per_event_agent(settings: Settings) -> None:
    """One Kafka record per reading, one Faust event each, the same monitors as the core."""
    import faust

    from citybrain.health import write_stats
    from streams.monitor import sensor_monitor

    app = faust.App(f"{settings.topic_prefix}-perevent", broker=f"kafka://{settings.kafka}", store="memory://",
                    web_enabled=False, topic_partitions=settings.partitions, consumer_auto_offset_reset="earliest",
                    topic_allow_declare=False)
    topic = app.topic(settings.topic("readings"), key_serializer="raw", value_serializer="raw")
    monitors: dict = {}
    count = [0]
    span: dict[str, float] = {}  # as the streams worker's: first event taken, latest one done

    @app.agent(topic)
    async def detect(stream):
        async for value in stream:
            span.setdefault("busy_from", time.time())
            r = Reading.decode(value)
            m = monitors.get(r.device)
            if m is None:
                m = monitors[r.device] = sensor_monitor(r.device, r.name, {}, 0.0)
            m.step(r.t, r.value, [])
            count[0] += 1
            span["busy_to"] = time.time()

    @app.timer(interval=0.2)
    async def beat():
        write_stats(settings.run_dir, "perevent", {"readings": count[0], **span})

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


# ---------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--per-event-readings", type=int, default=50_000)
    ap.add_argument("--feed", default="city", choices=("city", "n50"),
                    help="city: each sensor's normal day and a few anomalies; n50: N(50, 1) everywhere")
    ap.add_argument("--engines", default="scalar,vector", help="stream-core engines to measure, comma-separated")
    ap.add_argument("--per-event-agent", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.per_event_agent:
        per_event_agent(Settings.from_env())
        return 0

    from streams.core import StreamCore
    from streams.nab import runner
    from streams.worker import changelog_topic

    tmp = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    port = free_port()
    broker = subprocess.Popen(tansu_command(port), stdout=open(tmp / "tansu.log", "ab"), stderr=subprocess.STDOUT)
    results: dict[str, float] = {}
    try:
        for engine in a.engines.split(","):
            settings = Settings().replace(kafka_bootstrap=f"127.0.0.1:{port}", data_dir=tmp / f"data-{engine}",
                                          topic_prefix=f"b{uuid.uuid4().hex[:8]}", partitions=1,
                                          streams_engine=engine)
            ensure_topics(settings, extra=[changelog_topic(settings), settings.topic("readings")], timeout_s=60)
            batches = feed(settings, a.readings, a.devices, kind=a.feed)

            core = StreamCore(settings, load_city(settings.city_file))
            t0 = time.perf_counter()
            for p, bs in batches.items():
                for b in bs:
                    core.process(p, b)
            results[f"[{engine}] core (no broker), readings/s"] = a.readings / (time.perf_counter() - t0)

            recs = [(p, f"p{p}".encode(), b.encode()) for p, bs in batches.items() for b in bs]
            asyncio.run(produce(settings, settings.topic("signals"), recs))
            w = run_process(["-m", "streams"], settings, tmp / f"streams-{engine}.log")
            try:
                busy = wait_count(settings.run_dir / "streams.json", a.readings)
                results[f"[{engine}] Faust worker, columnar batches, readings/s"] = a.readings / busy
                st = json.loads((settings.run_dir / "streams.json").read_text())
                results[f"[{engine}]   of which in the core, s"] = st["process_s"]
                results[f"[{engine}]   of which checkpointing, s"] = st["checkpoint_s"]
                results[f"[{engine}]   busy (first batch taken to last done), s"] = busy
            finally:
                stop(w)

        singles = [(p, r.device.encode(), r.encode()) for p, bs in batches.items() for b in bs
                   for r in b.readings()][: a.per_event_readings]
        asyncio.run(produce(settings, settings.topic("readings"), singles))
        w = run_process([str(Path(__file__).resolve()), "--per-event-agent"], settings, tmp / "perevent.log")
        try:
            results["Faust per-event agent, readings/s"] = len(singles) / wait_count(settings.run_dir / "perevent.json",
                                                                                    len(singles))
        finally:
            stop(w)

        nab = runner.run(nab_data(), tmp / "nab")
        results["NAB mode, points/s"] = nab["points_per_s"]
    finally:
        stop(broker)
    for k, v in results.items():
        print(f"| {k} | {v:,.2f} |" if v < 100 else f"| {k} | {v:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
