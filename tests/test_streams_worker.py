"""The streams worker through a real Faust worker process and the tansu broker.

Produces SignalBatches with aiokafka the way ingest does (partition of the grid), and reads the
warnings topic: a water level above its alarm limit twice gives a flood warning; the pending
"one reading above alarm" survives a worker restart (state recovered from the changelog).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from citybrain.kafka import ensure_topics, partition_for
from citybrain.records import DeadLetter, SignalBatch, Warning
from streams.worker import changelog_topic

pytestmark = pytest.mark.slow
T0 = 1_795_339_350.0


def start_worker(settings, log_path):
    env = {**os.environ, **settings.to_env(), "CITYBRAIN_LOG_LEVEL": "INFO"}
    return subprocess.Popen([sys.executable, "-m", "streams"], env=env, stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT)


def stop_worker(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def batch(device, grid, ts, values) -> SignalBatch:
    n = len(ts)
    return SignalBatch(device=(device,) * n, name=("water_level",) * n, grid=(grid,) * n, t=tuple(ts),
                       value=tuple(values), ids=tuple(f"{device}-{t}" for t in ts))


async def produce(settings, grid, batches):
    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await prod.start()
    try:
        p = partition_for(grid, settings.partitions)
        for b in batches:
            value = b if isinstance(b, bytes) else b.encode()
            await prod.send_and_wait(settings.topic("signals"), value, key=f"p{p}".encode(), partition=p)
    finally:
        await prod.stop()


async def records_until(settings, topic, record, pred, timeout):
    cons = AIOKafkaConsumer(settings.topic(topic), bootstrap_servers=settings.kafka,
                            auto_offset_reset="earliest", group_id=None)
    await cons.start()
    got = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = await cons.getmany(timeout_ms=500)
            for rs in recs.values():
                got += [record.decode(r.value) for r in rs]
            if pred(got):
                return got
    finally:
        await cons.stop()
    return got


def wait_stats(settings, key, pred, timeout=60):
    path = settings.run_dir / "streams.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = json.loads(path.read_text())
            if pred(s.get(key)):
                return s
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"stats {key} never satisfied; last: {path.read_text() if path.exists() else None}")


def test_flood_warning_through_faust_and_state_survives_restart(settings, demo_city, tmp_path):
    ensure_topics(settings, extra=[changelog_topic(settings)])
    dev = demo_city.devices["wl-00001"]
    alarm = dict(dev.limits)["alarm"]
    normal = [T0 + 60 * i for i in range(40)]
    asyncio.run(produce(settings, dev.area, [batch(dev.id, dev.area, normal, [1.0 + 0.01 * (i % 3) for i in range(40)]),
                                            batch(dev.id, dev.area, [T0 + 2400], [alarm + 0.5])]))
    proc = start_worker(settings, tmp_path / "worker1.log")
    try:
        s = wait_stats(settings, "readings", lambda n: n == 41)
        assert s["state"] == "up" and s["warnings"] == 0  # one reading above alarm is not enough
        time.sleep(1.5)  # let the heartbeat see the lag drop; checkpoint was written with the batch
        wait_stats(settings, "lag", lambda n: n == 0)
    finally:
        assert stop_worker(proc) == 0
    proc = start_worker(settings, tmp_path / "worker2.log")
    try:
        asyncio.run(produce(settings, dev.area, [batch(dev.id, dev.area, [T0 + 2460], [alarm + 0.6])]))
        got = asyncio.run(records_until(settings, "warnings", Warning, lambda ws: any(w.event == "flood" for w in ws), 60))
        flood = [w for w in got if w.event == "flood"]
        assert flood, f"no flood warning; worker log: {(tmp_path / 'worker2.log').read_text()[-3000:]}"
        w = flood[0]
        assert w.grid == dev.area and w.active and w.severity in ("Severe", "Extreme")
        assert w.started_at == T0 + 2400  # the episode began before the restart
        assert any(e.source == dev.id for e in w.evidence)
        s = wait_stats(settings, "readings", lambda n: n == 1)  # only the new reading was processed
        assert str(partition_for(dev.area, settings.partitions)) in s["watermark"]
        # a reading far behind the watermark, and a record that is not a batch, become dead letters
        asyncio.run(produce(settings, dev.area, [batch(dev.id, dev.area, [T0], [1.0]), b"{not json"]))
        dead = asyncio.run(records_until(settings, "deadletter", DeadLetter, lambda ds: len(ds) >= 2, 30))
        assert [(d.reason, d.stage) for d in dead] == [("too_late", "streams"), ("bad_batch", "streams")]
        assert dead[0].device == dev.id
        s = wait_stats(settings, "bad_events", lambda n: n == 1)
        assert s["too_late"] == 1 and s["state"] == "up"
    finally:
        assert stop_worker(proc) == 0


def _stats_of(settings) -> dict:
    try:
        return json.loads((settings.run_dir / "streams.json").read_text())
    except (OSError, ValueError):
        return {}


def test_two_workers_share_partitions_and_state_follows_a_killed_workers_partitions(settings, demo_city, tmp_path):
    """Two Faust workers split the partitions; kill -9 one; the other takes its partitions over
    with their learned state from the changelog: an episode begun on the dead worker ends in a
    warning on the survivor, with its original start time, in every grid."""
    from tests.ingest_helpers import wait_for

    ensure_topics(settings, extra=[changelog_topic(settings)])
    P = settings.partitions
    devs = {}
    for d in sorted(demo_city.sensors(), key=lambda d: d.id):
        if d.kind == "water_level" and "alarm" in dict(d.limits):
            devs.setdefault(partition_for(d.area, P), d)
    assert len(devs) == P  # one flood gauge on every partition
    a_set = settings.replace(data_dir=tmp_path / "a")
    b_set = settings.replace(data_dir=tmp_path / "b")
    wa, wb = start_worker(a_set, tmp_path / "a.log"), start_worker(b_set, tmp_path / "b.log")
    try:
        wait_for(lambda: _stats_of(a_set).get("state") == "up" and _stats_of(b_set).get("state") == "up", 60)
        time.sleep(12)  # both in the group, partitions split
        for d in devs.values():
            alarm = dict(d.limits)["alarm"]
            normal = [T0 + 60 * i for i in range(40)]
            asyncio.run(produce(settings, d.area, [
                batch(d.id, d.area, normal, [1.0 + 0.01 * (i % 3) for i in range(40)]),
                batch(d.id, d.area, [T0 + 2400], [alarm + 0.5])]))
        wait_for(lambda: _stats_of(a_set).get("readings", 0) + _stats_of(b_set).get("readings", 0) == 41 * P, 60)
        a_had = _stats_of(a_set)["readings"]
        assert 0 < a_had < 41 * P, "both workers must own partitions"
        time.sleep(1.5)  # the pending episodes were checkpointed with their batch
        wa.kill()
        wa.wait()
        for d in devs.values():
            alarm = dict(d.limits)["alarm"]
            asyncio.run(produce(settings, d.area, [batch(d.id, d.area, [T0 + 2460], [alarm + 0.6])]))
        got = asyncio.run(records_until(settings, "warnings", Warning,
                                        lambda ws: {w.grid for w in ws if w.event == "flood"} >= {d.area for d in devs.values()},
                                        90))
        flood = {w.grid: w for w in got if w.event == "flood"}
        assert set(flood) >= {d.area for d in devs.values()}, (tmp_path / "b.log").read_text()[-3000:]
        assert all(w.started_at == T0 + 2400 for w in flood.values())  # episodes begun before the kill
        assert "assigned: restored" in (tmp_path / "b.log").read_text()
    finally:
        if wa.poll() is None:
            wa.kill()
        assert stop_worker(wb) == 0
