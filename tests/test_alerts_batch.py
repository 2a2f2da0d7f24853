"""A fetch of warnings handled in one store transaction (``IncidentService.handle_warnings``).

Why: a city-wide storm (2,000 warnings within a second) took ~7 s when each warning had its own
transaction and read every open incident of its event. The batch must do exactly what one by
one did (incidents, messages, audit chain, byte for byte), undo a malformed warning alone, undo
everything on a store outage, and survive a crash of the service mid-storm without duplicates.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
import uuid

import pytest

from alerts import audit
from alerts.api import IncidentService
from citybrain.city import load_city
from citybrain.clock import ManualClock
from citybrain.exceptions import StoreUnavailable
from citybrain.kafka import ensure_topics
from citybrain.records import Evidence, Incident, Warning
from citybrain.settings import Settings
from tests.ingest_helpers import TINY, wait_for
from tests.test_alerts_loop import produce
from tests.test_alerts_service import T0, Recorder, warning
from tests.test_alerts_store_outage import incident_view, start_alerts


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request, tmp_path):
    """Two empty stores of one kind: a reference and the one under test."""
    if request.param == "sqlite":
        yield [f"sqlite:///{tmp_path / f'incidents{k}.db'}" for k in range(2)]
        return
    base = request.getfixturevalue("pg_url")  # a fresh database (skips without PostgreSQL) ...
    import psycopg

    server, name = base.rsplit("/", 1)
    with psycopg.connect(base, autocommit=True) as c:  # ... and a second one next to it
        c.execute(f'CREATE DATABASE "{name}_b"')
    yield [base, f"{server}/{name}_b"]
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}_b" WITH (FORCE)')


def service(city, store_url: str, tmp_path, tag: str) -> IncidentService:
    s = Settings().replace(data_dir=tmp_path / tag, store_url=store_url)
    return IncidentService(s, city, clock=ManualClock(T0), publisher=Recorder())


def storm(city, n: int, seed: int = 3) -> list[Warning]:
    """A storm over a cluster of neighbouring grids: merges into the grid and its neighbours,
    situations re-sent with more evidence (same id), lone Minor ones, back-to-normal ones."""
    rng = random.Random(seed)
    grids = [a.id for a in city.by_level("grid")]
    cluster = sorted({g2 for g in grids[:: len(grids) // 12] for g2 in {g, *city.neighbours[g]}})
    out: list[Warning] = []
    for k in range(n):
        g = rng.choice(cluster)
        event = rng.choice(("flood", "fire", "traffic_jam"))
        sid = f"s-{event}-{g}-{rng.randrange(3)}"
        sources = rng.randrange(1, 6)
        out.append(Warning(
            id=sid, event=event, grid=g, district=city.district_of(g), location=city.areas[g].centroid,
            t=T0 - 100 + k * 0.01, started_at=T0 - 200, score=0.5, certainty=rng.choice(("Possible", "Likely")),
            severity=rng.choice(("Minor", "Moderate", "Severe", "Extreme")), urgency="Immediate",
            detector="fusion:cusum", explanation=f"{sources} sources", active=rng.random() > 0.1,
            evidence=tuple(Evidence(f"{event}-{g}-{j}", event, T0 - 150 + j, float(j), "drift")
                           for j in range(sources))))
    return out


def everything(svc: IncidentService) -> dict:
    """All the store holds and all that was published, in order."""
    tables = {t: svc.store.read(f"SELECT * FROM {t} ORDER BY 1")
              for t in ("incidents", "warnings_seen", "pending", "units", "audit")}
    return {**tables, "published": list(svc.publisher.sent)}


def test_a_batch_does_exactly_what_one_by_one_does(demo_city, two_stores, tmp_path, monkeypatch):
    monkeypatch.setattr("alerts.api.uuid.uuid4", lambda: uuid.UUID(int=7))  # the same silence id in both
    ws = storm(demo_city, 300)
    one, batch = (service(demo_city, url, tmp_path, tag) for url, tag in zip(two_stores, ("one", "batch")))
    for svc in (one, batch):  # the same history before the storm: acknowledged, ended, silenced
        early = [svc.handle_warning(w) for w in storm(demo_city, 40, seed=9)]
        incs = sorted({i.id for i in early if i is not None})
        svc.act(incs[0], "acknowledge", "alice")
        svc.act(incs[1], "false_alarm", "alice")
        svc.add_silence("grid", ws[5].grid, T0 + 3600, "admin")
    for w in ws:
        one.handle_warning(w)
    result = batch.handle_warnings(ws)
    assert result.failed == () and len(result.incidents) == len(ws)
    assert everything(batch) == everything(one)
    assert audit.verify(batch.store).ok


def test_several_warnings_for_one_grid_in_a_batch_become_one_incident_with_all_evidence(demo_city, tmp_path):
    svc = service(demo_city, f"sqlite:///{tmp_path / 'g.db'}", tmp_path, "g")
    g = demo_city.by_level("grid")[0].id
    ws = [warning(f"w{k}", grid=g, source=f"dev-{k}", t=T0 - 30 + k) for k in range(20)]
    out = svc.handle_warnings(ws)
    [inc] = svc.list_incidents("all")
    assert {i.id for i in out.incidents} == {inc.id}
    assert {e.source for e in inc.evidence} == {f"dev-{k}" for k in range(20)}
    assert set(inc.warnings) == {w.id for w in ws} and inc.version == 20
    assert [t for t, _ in svc.publisher.sent].count(f"city/alerts/{inc.id}") == 20  # each change published
    assert svc.handle_warnings(ws).incidents == (None,) * 20  # redelivered: changes nothing
    assert svc.get(inc.id).version == 20


def test_a_batch_is_one_transaction(demo_city, tmp_path):
    svc = service(demo_city, f"sqlite:///{tmp_path / 'tx.db'}", tmp_path, "tx")
    opened = []
    tx = svc.store.tx
    svc.store.tx = lambda: (opened.append(1), tx())[1]
    svc.handle_warnings(storm(demo_city, 50))
    assert len(opened) == 1


def test_a_malformed_warning_is_undone_alone(demo_city, tmp_path, monkeypatch):
    svc = service(demo_city, f"sqlite:///{tmp_path / 'bad.db'}", tmp_path, "bad")
    g = demo_city.by_level("grid")[0].id
    others = [g2 for g2 in demo_city.neighbours if g2 not in demo_city.neighbours[g] and g2 != g]
    ws = [warning("a", grid=g), warning("b", grid=others[0], event="fire"), warning("c", grid=g, source="dev-c")]
    queue = svc._queue_incident

    def fail_for_fire(cur, inc):  # after the incident, its audit entry and warnings_seen row were written
        if inc.event == "fire":
            raise KeyError("no such thing")
        queue(cur, inc)

    monkeypatch.setattr(svc, "_queue_incident", fail_for_fire)
    out = svc.handle_warnings(ws)
    assert out.failed == ((1, "KeyError: 'no such thing'"),) and out.incidents[1] is None
    [inc] = svc.list_incidents("all")
    assert inc.event == "flood" and set(inc.warnings) == {"a", "c"}
    assert svc.store.read("SELECT id FROM warnings_seen ORDER BY id") == [("a",), ("c",)]
    assert {t for t, _ in svc.publisher.sent} == {f"city/alerts/{inc.id}"}
    assert audit.verify(svc.store).ok  # no gap where the undone entries were


def test_a_store_outage_mid_batch_undoes_it_all_and_the_retry_matches(demo_city, two_stores, tmp_path, monkeypatch):
    ws = storm(demo_city, 80)
    ref, svc = (service(demo_city, url, tmp_path, tag) for url, tag in zip(two_stores, ("ref", "out")))
    for w in ws:
        ref.handle_warning(w)
    calls = [0]
    merge = svc._merge

    def flaky(inc, w, now):
        calls[0] += 1
        if calls[0] == 10:
            raise StoreUnavailable("incident store is unavailable: disk I/O error")
        return merge(inc, w, now)

    monkeypatch.setattr(svc, "_merge", flaky)
    with pytest.raises(StoreUnavailable):
        svc.handle_warnings(ws)
    assert svc.list_incidents("all") == [] and svc.publisher.sent == []
    assert svc.store.read("SELECT COUNT(*) FROM warnings_seen") == [(0,)]
    svc.handle_warnings(ws)  # what the service's StoreGate does: the same batch again
    assert everything(svc) == everything(ref)


def test_a_warning_reads_only_the_incidents_of_its_grid_and_neighbours(demo_city, tmp_path, monkeypatch):
    svc = service(demo_city, f"sqlite:///{tmp_path / 'near.db'}", tmp_path, "near")
    grids = [a.id for a in demo_city.by_level("grid")]
    for k, g in enumerate(grids):
        svc.handle_warning(warning(f"f{k}", event="fire", grid=g, source=f"d{k}"))
    assert len(svc.list_incidents("open")) >= 60
    decoded = []
    decode = Incident.decode
    monkeypatch.setattr(Incident, "decode", classmethod(lambda cls, b: (decoded.append(1), decode(b))[1]))
    g = grids[200]
    near = {g, *demo_city.neighbours[g]}
    candidates = sum(1 for i in svc.list_incidents("open") if i.area in near)
    decoded.clear()
    inc = svc.handle_warning(warning("target", event="fire", grid=g, source="dev-target"))
    assert inc.area in near
    assert len(decoded) <= candidates + 1  # + the saved version read back to publish


def storm_on_tiny(n: int) -> list[Warning]:
    city = load_city(TINY)
    grids = [a.id for a in city.by_level("grid")]
    out = []
    for k in range(n):
        g, ev = grids[k % 4], ("fire", "flood", "gas_leak", "noise")[(k // 4) % 4]
        out.append(Warning(id=f"crash-w{k}", event=ev, grid=g, district=city.district_of(g),
                           location=city.areas[g].centroid, t=T0 + k, started_at=T0 - 60, score=0.9,
                           severity=("Severe", "Extreme")[k % 2], certainty="Likely", urgency="Immediate",
                           detector="threshold", explanation="test",
                           evidence=(Evidence(f"dev-{k % 300}", ev, T0 + k, 1.0 + k),)))
    return out


@pytest.mark.slow
def test_a_service_killed_mid_storm_resumes_with_nothing_lost_or_duplicated(settings, tmp_path):
    s = settings.replace(city_file=TINY)
    ensure_topics(s)
    ws = storm_on_tiny(3000)
    db = s.data_dir / "incidents.db"

    def seen() -> int:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                return c.execute("SELECT COUNT(*) FROM warnings_seen").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    proc = start_alerts(s, tmp_path / "alerts.log")
    try:
        wait_for(lambda: (s.run_dir / "alerts.json").exists(), 60)
        produce_fast(s, ws)
        wait_for(lambda: seen() > 0, 60, every=0.002)
        os.kill(proc.pid, signal.SIGKILL)  # mid-storm: a fetch half-handled, offsets not committed
        proc.wait(10)
        at_kill = seen()
        assert 0 < at_kill < len(ws)
        again = start_alerts(s, tmp_path / "alerts2.log")
        try:
            wait_for(lambda: seen() == len(ws), 120)
            time.sleep(1.0)  # anything replayed twice would show up now
        finally:
            again.terminate()
            assert again.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reference = IncidentService(Settings().replace(data_dir=tmp_path / "ref"), load_city(TINY))
    reference.handle_warnings(ws)
    got = IncidentService(s, load_city(TINY))
    assert incident_view(got) == incident_view(reference)
    assert sorted(w for _, _, ids in incident_view(got) for w in ids) == sorted(w.id for w in ws)  # each once
    assert audit.verify(got.store).ok
    stats = json.loads((s.run_dir / "alerts.json").read_text())
    assert stats["bad_records"] == 0


def produce_fast(settings, records) -> None:
    """All at once (the loop tests' ``produce`` waits for each record)."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka, linger_ms=5)
        await p.start()
        try:
            # one key: one partition, so the order (and which warning opens an incident) is fixed
            futs = [await p.send(settings.topic("warnings"), r.encode(), key=b"k") for r in records]
            await asyncio.gather(*futs)
        finally:
            await p.stop()
    asyncio.run(go())


@pytest.mark.slow
def test_a_malformed_warning_in_a_fetch_is_counted_and_the_rest_handled(settings, tmp_path):
    s = settings.replace(city_file=TINY)
    ensure_topics(s)
    proc = start_alerts(s, tmp_path / "alerts.log")
    stats = s.run_dir / "alerts.json"
    try:
        wait_for(lambda: stats.exists(), 60)
        produce(s, "warnings", [warning("ok1"), warning("bogus", severity="Bogus", source="x"),
                                warning("ok2", source="y")])
        wait_for(lambda: (d := json.loads(stats.read_text()))["warnings_in"] == 2 and d["bad_records"] == 1, 30)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    [inc] = IncidentService(s, load_city(TINY)).list_incidents("all")
    assert set(inc.warnings) == {"ok1", "ok2"}
    assert "bad record on" in (tmp_path / "alerts.log").read_text()


def test_the_timers_after_a_storm_build_only_the_incidents_they_change(demo_city, tmp_path, monkeypatch):
    svc = service(demo_city, f"sqlite:///{tmp_path / 'timers.db'}", tmp_path, "timers")
    grids = [a.id for a in demo_city.by_level("grid")]
    svc.handle_warnings([warning(f"t{k}", event="fire", grid=g, source=f"d{k}",
                                 severity=("Severe", "Extreme")[k % 2]) for k, g in enumerate(grids)])
    open_ = svc.list_incidents("open")
    assert svc.count_open() == len(open_) >= 60
    decoded = []
    decode = Incident.decode
    monkeypatch.setattr(Incident, "decode", classmethod(lambda cls, b: (decoded.append(1), decode(b))[1]))
    assert svc.tick() == [] and decoded == []  # none due: none built
    svc.clock.advance(60)  # the Extreme ones escalate (60 s), the Severe ones not yet (120 s)
    escalated = svc.tick()
    extreme = {i.id for i in open_ if i.severity == "Extreme"}
    assert {i.id for i in escalated} == extreme and len(decoded) == len(extreme) * 2  # + read back to publish
    svc.clock.advance(60)  # now the Severe ones escalate and the Extreme ones are reminded of
    decoded.clear()
    assert {i.id for i in svc.tick()} == {i.id for i in open_} - extreme
    assert [t for t, _ in svc.publisher.sent[-len(open_):]].count("city/alerts/" + next(iter(extreme))) == 1
