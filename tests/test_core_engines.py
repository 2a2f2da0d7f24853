"""The stream core's two engines (scalar monitors vs the vectorised SensorBank) give the same everything.

Random city feeds go through a ``StreamCore`` of each engine, batch by batch, on two partitions:
several readings per device per batch (and batches of one), floods, spikes, stuck values,
silences, out-of-range and non-finite values, late and too-late readings, duplicate ids, a
device that also reports under a second kind, devices not in the city, camera events, counts
and presence. Every ``Output`` (warnings and dead letters, byte for byte), the counts, the
watermarks, ``needs_checkpoint`` and every checkpoint (the urgent ones the worker writes after
a batch and, periodically, the full ones) must be equal. Halfway, each engine's changelog is
restored into a fresh core of each engine and the four continue identically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from citybrain.city import load_city
from citybrain.clock import ManualClock
from citybrain.records import CameraCount, CameraEvent, Presence, SignalBatch
from citybrain.settings import BUNDLED_CITY, Settings
from streams import core as core_mod
from streams.core import StreamCore
from streams.vector.bank import BASE, F

T0 = 1_795_339_200.0
TINY = Path(__file__).parent / "data" / "tiny_city.yaml"

#: kind -> (level, noise sd); other kinds get (10, 1)
LEVELS = {"water_level": (1.0, 0.02), "pm25": (30.0, 3.0), "smoke": (5.0, 0.5), "noise": (55.0, 2.0),
          "temperature": (20.0, 0.5), "traffic_speed": (50.0, 3.0), "gas": (1.0, 0.1),
          "traffic_flow": (800.0, 40.0), "power": (500.0, 20.0), "rainfall": (2.0, 0.5),
          "occupancy": (40.0, 3.0), "vibration": (2.0, 0.2)}


@pytest.fixture(scope="module")
def tiny_city():
    return load_city(TINY)


@pytest.fixture(scope="module")
def demo():
    return load_city(BUNDLED_CITY)


def engines(city, **kw) -> tuple[StreamCore, StreamCore]:
    return tuple(StreamCore(Settings().replace(streams_engine=e, **kw), city, ManualClock(7.0))
                 for e in ("scalar", "vector"))


# ---------------------------------------------------------------------- the feed


def sensor_items(rng, dev: str, kind: str, grid: str, n: int, serial: list[int]) -> list[tuple]:
    """(arrival key, partition-free row) of one sensor: normal days plus a city's troubles."""
    level, sd = LEVELS.get(kind, (10.0, 1.0))
    cad = float(rng.choice([30.0, 60.0, 120.0]))
    gaps = cad * np.clip(1 + 0.05 * rng.standard_normal(n), 0.5, None)
    gaps[rng.random(n) < 0.01] = 0.0  # repeated timestamps (distinct ids)
    for i in rng.choice(np.arange(20, n), size=2, replace=False):
        gaps[i] += rng.uniform(900, 3 * 3600)  # silences
    key = T0 + rng.uniform(0, cad) + np.cumsum(gaps)
    t = key.copy()
    late = rng.random(n) < 0.03
    key[late] += rng.uniform(20, 150, late.sum())  # arrives late: some within grace, some not
    too_late = rng.random(n) < 0.005
    t[too_late] -= 3000.0
    hour = (t / 3600.0) % 24
    x = level + 0.2 * level * np.sin(2 * np.pi * (hour - 8) / 24) + rng.normal(0, sd, n)
    a = int(rng.integers(n // 4, n // 2))
    dur = int(rng.integers(20, 260))
    x[a:a + dur] += float(rng.choice([-1, 1])) * float(rng.uniform(6, 25)) * sd + (3.0 if kind == "water_level" else 0)
    for i in rng.choice(n, size=4, replace=False):
        x[i] += float(rng.choice([-1, 1])) * 20 * sd  # spikes
    s = int(rng.integers(10, n - 30))
    x[s:s + int(rng.integers(12, 30))] = x[s]  # stuck
    x[rng.choice(n, size=2, replace=False)] = -50.0  # outside most physical ranges
    x[rng.random(n) < 0.002] = np.nan
    x = np.round(x, 4)
    out = []
    for k, ti, xi in zip(key.tolist(), t.tolist(), x.tolist(), strict=True):
        serial[0] += 1
        out.append((k, (dev, kind, grid, ti, xi, f"{dev}|{serial[0]}")))
    return out


def camera_items(rng, cam: str, grid: str, t_end: float) -> list[tuple]:
    out = []
    t = T0 + rng.uniform(600, 3600)
    obj = 0
    while t < t_end:
        obj += 1
        label = str(rng.choice(["fire", "smoke", "accident", "intrusion", "person"]))
        start = t
        for _ in range(int(rng.integers(1, 6))):
            t += rng.uniform(2, 20)
            sc = float(rng.uniform(0.4, 1.0))
            out.append((t, CameraEvent(cam, "update", f"o{obj}", label, sc, sc, t, start, grid=grid)))
        if rng.random() < 0.8:
            t += rng.uniform(5, 200)
            out.append((t, CameraEvent(cam, "end", f"o{obj}", label, 0.9, 0.9, t, start, t, grid=grid)))
        for _ in range(int(rng.integers(0, 3))):
            out.append((t + 1, CameraCount(cam, "person", int(rng.poisson(3 if rng.random() < 0.9 else 40)), t + 1,
                                           grid=grid)))
        t += rng.uniform(300, 3000)
    return out


def city_feed(city, seed: int, n_sensors: int, n: int) -> list[tuple[int, SignalBatch]]:
    """(partition, batch) in arrival order."""
    rng = np.random.default_rng(seed)
    sensors = sorted((d for d in city.devices.values() if d.kind != "camera"), key=lambda d: d.id)
    sensors = [sensors[i] for i in sorted(rng.choice(len(sensors), size=min(n_sensors, len(sensors)), replace=False))]
    cams = [d for d in city.devices.values() if d.kind == "camera"][:3]
    serial = [0]
    items: list[tuple[float, int, object]] = []  # (arrival key, partition, row or event)
    for j, d in enumerate(sensors):
        items += [(k, j % 2, r) for k, r in sensor_items(rng, d.id, d.kind, d.area, n, serial)]
    d0 = sensors[0]  # the same device under a second kind (grouped with its first kind in a batch)
    items += [(k, 0, r) for k, r in sensor_items(rng, d0.id, "temperature" if d0.kind != "temperature" else "noise",
                                                 d0.area, max(n // 3, 120), serial)]
    for g in range(3):  # devices not in the city file
        items += [(k, 1, r) for k, r in sensor_items(rng, f"ghost-{seed}-{g}", "water_level", "", max(n // 2, 120), serial)]
    t_end = max(k for k, _, _ in items)
    for c in cams:
        items += [(k, 0, e) for k, e in camera_items(rng, c.id, c.area, t_end)]
    items += [(k, 1, e) for k, e in camera_items(rng, f"ghost-cam-{seed}", "G9", t_end)]
    for d in sensors[1:4]:  # presence: offline, online
        t_off = T0 + float(rng.uniform(3600, t_end - T0 - 3600))
        items += [(t_off, 0, Presence(d.id, False, t_off, d.area)), (t_off + 900, 0, Presence(d.id, True, t_off + 900,
                                                                                          d.area))]
    items.sort(key=lambda it: it[0])
    dupes = rng.choice(len(items), size=len(items) // 200, replace=False)
    for i in sorted(dupes.tolist(), reverse=True):  # a reading sent again a little later
        if isinstance(items[i][2], tuple):
            items.insert(min(len(items), i + int(rng.integers(1, 400))), items[i])
    sizes = [1, 1, 2, 3, 5, 8, 13, 20, 40, 100, 300]  # tiny batches (one reading) and large ones (many per device)
    batches: list[tuple[int, SignalBatch]] = []
    pending: dict[int, list] = {0: [], 1: []}
    size = {p: int(rng.choice(sizes)) for p in pending}
    for _, p, it in items:
        pending[p].append(it)
        if len(pending[p]) >= size[p]:
            batches.append((p, batch_of(pending[p])))
            pending[p], size[p] = [], int(rng.choice(sizes))
    batches += [(p, batch_of(pending[p])) for p in (0, 1) if pending[p]]
    return batches


def batch_of(chunk: list) -> SignalBatch:
    rows = [x for x in chunk if isinstance(x, tuple)]
    return SignalBatch(device=tuple(r[0] for r in rows), name=tuple(r[1] for r in rows),
                       grid=tuple(r[2] for r in rows), t=tuple(r[3] for r in rows),
                       value=tuple(r[4] for r in rows), ids=tuple(r[5] for r in rows),
                       events=tuple(e.to_dict() for e in chunk if not isinstance(e, tuple)))


# ---------------------------------------------------------------------- comparing


def same_ckpt(a: dict, b: dict, what: str) -> None:
    ja, jb = json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True)
    if ja != jb:
        diff = sorted(k for k in set(a) | set(b) if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True))
        raise AssertionError(f"{what}: checkpoints differ at {diff[:5]}")


class Pair:
    """Cores fed the same batches; every result compared with the first core's."""

    def __init__(self, cores: list[StreamCore], full_every: int = 9) -> None:
        self.cores, self.full_every = cores, full_every
        self.changelogs: list[dict[int, dict]] = [{} for _ in cores]
        self.n = 0
        self.warnings: list = []

    def feed(self, p: int, b: SignalBatch) -> None:
        outs = [c.process(p, b) for c in self.cores]
        ref = outs[0]
        for i, o in enumerate(outs[1:], 1):
            w0, w1 = [w.encode() for w in ref.warnings], [w.encode() for w in o.warnings]
            assert w0 == w1, f"batch {self.n}, core {i}: warnings differ\n{w0}\n{w1}"
            assert [d.encode() for d in ref.dead_letters] == [d.encode() for d in o.dead_letters], (self.n, i)
            assert self.cores[0].counts == self.cores[i].counts, (self.n, i)
            assert self.cores[0].watermarks() == self.cores[i].watermarks(), (self.n, i)
        self.warnings += ref.warnings
        need = [c.needs_checkpoint(p) for c in self.cores]
        assert len(set(need)) == 1, (self.n, need)
        full = self.n % self.full_every == 0
        if full or need[0]:
            cks = [json.loads(json.dumps(c.checkpoint(p, full))) for c in self.cores]
            for i, ck in enumerate(cks):
                same_ckpt(cks[0], ck, f"batch {self.n}, core {i}, full={full}")
                self.changelogs[i].setdefault(p, {}).update(ck)
        self.n += 1

    def flush(self) -> None:
        for p in (0, 1):
            cks = [json.loads(json.dumps(c.checkpoint(p, True))) for c in self.cores]
            for i, ck in enumerate(cks):
                same_ckpt(cks[0], ck, f"final full checkpoint, core {i}")
                self.changelogs[i].setdefault(p, {}).update(ck)


def run_engines(city, seed: int, n_sensors: int, n: int, cut: float = 0.5, **kw) -> Pair:
    batches = city_feed(city, seed, n_sensors, n)
    pair = Pair(list(engines(city, **kw)))
    half = int(len(batches) * cut)
    for p, b in batches[:half]:
        pair.feed(p, b)
    pair.flush()
    # each engine's changelog restored into a fresh core of each engine: all four continue alike
    restored = []
    for log in pair.changelogs:
        for c in engines(city, **kw):
            got = {p: c.restore(p, json.loads(json.dumps(items))) for p, items in log.items()}
            restored.append((got, c))
    assert len({json.dumps(g, sort_keys=True) for g, _ in restored}) == 1 and sum(restored[0][0].values()) > 10
    again = Pair([c for _, c in restored])
    for p, b in batches[half:]:
        pair.feed(p, b)
        again.feed(p, b)
    pair.flush()
    again.flush()
    return pair


def assert_exercised(pair: Pair) -> None:
    c = pair.cores[0].counts
    assert c["late"] > 0 and c["too_late"] > 0 and c["duplicates"] > 0 and c["events"] > 0, c
    events = {(w.event, w.active) for w in pair.warnings}
    assert ("device_offline", True) in events and ("device_offline", False) in events, events
    assert len(events) >= 6, events


@pytest.fixture
def paths(monkeypatch):
    """Set which segments the vector engine steps on scalar twins; count the segments of each path."""
    used = {"bank": 0, "twins": 0}
    bank_path, twin_path = StreamCore._readings_vec, StreamCore._readings_twins

    def on_bank(self, st, b, codes, t, v, keep, found):
        used["bank"] += int(0 < keep.sum() and keep.sum() >= core_mod.TWIN_BELOW)
        return bank_path(self, st, b, codes, t, v, keep, found)

    def on_twins(self, *a):
        used["twins"] += 1
        return twin_path(self, *a)

    monkeypatch.setattr(StreamCore, "_readings_vec", on_bank)
    monkeypatch.setattr(StreamCore, "_readings_twins", on_twins)

    def use(twin_below: int | None) -> dict[str, int]:
        if twin_below is not None:
            monkeypatch.setattr(core_mod, "TWIN_BELOW", twin_below)
        return used
    return use


#: 0: every segment through the bank; 3: small ones on twins (rows move between the two); None: as shipped
TWINS = [0, 3, None]


@pytest.mark.parametrize("twin_below", TWINS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_engines_agree_on_the_tiny_city(tiny_city, paths, seed, twin_below):
    used = paths(twin_below)
    pair = run_engines(tiny_city, seed, n_sensors=8, n=600)
    assert_exercised(pair)
    if twin_below is not None:  # (as shipped, this small a city's segments all go to twins)
        assert used["bank"] > 50 and (used["twins"] > 50 or twin_below == 0), used


@pytest.mark.parametrize(("seed", "twin_below"), [(4, 0), (5, 3)])
def test_engines_agree_on_the_demo_city(demo, paths, seed, twin_below):
    used = paths(twin_below)
    pair = run_engines(demo, seed, n_sensors=60, n=300)
    assert_exercised(pair)
    assert {"flood", "fire"} <= {w.event for w in pair.warnings}
    assert used["bank"] > 50 and (used["twins"] > 50 or twin_below == 0), used


def test_engines_agree_as_shipped_on_many_devices(demo, paths):
    """Enough devices that segments are large: both paths of the shipped engine, rows moving between them."""
    used = paths(None)
    pair = run_engines(demo, 8, n_sensors=300, n=70)
    assert pair.cores[0].counts["readings"] > 15_000
    assert used["bank"] > 20 and used["twins"] > 20, used


@pytest.mark.parametrize("twin_below", [0, 3])
def test_engines_agree_when_sources_outside_the_city_run_out(demo, monkeypatch, paths, twin_below):
    paths(twin_below)
    monkeypatch.setattr(core_mod, "MAX_EXTRA_SOURCES", 2)
    pair = run_engines(demo, 6, n_sensors=20, n=300, cut=0.3)
    assert pair.cores[0].counts["unmonitored"] > 0


def test_engines_agree_with_other_lateness_settings(tiny_city, paths):
    paths(3)
    run_engines(tiny_city, 7, n_sensors=8, n=400, allowed_lateness_s=0.0, grace_s=300.0)


# ---------------------------------------------------------------------- the comparison can fail


def test_a_perturbed_vector_engine_is_caught(tiny_city, monkeypatch):
    """Baseline episodes of the vector engine closing 60 s later: the outputs differ."""
    monkeypatch.setattr(core_mod, "TWIN_BELOW", 0)
    batches = city_feed(tiny_city, 1, 8, 700)
    s, v = engines(tiny_city)
    v.part(0).bank.p.rules.quiet_s[BASE] += 60.0
    v.part(1).bank.p.rules.quiet_s[BASE] += 60.0
    pair = Pair([s, v], full_every=10**9)
    with pytest.raises(AssertionError):
        for p, b in batches:
            pair.feed(p, b)


def test_a_one_ulp_state_difference_is_caught(tiny_city, monkeypatch):
    """One ulp in one device's CUSUM level: the next full checkpoint differs."""
    monkeypatch.setattr(core_mod, "TWIN_BELOW", 0)
    batches = city_feed(tiny_city, 2, 8, 300)
    s, v = engines(tiny_city)
    pair = Pair([s, v], full_every=10**9)
    for p, b in batches[:len(batches) // 2]:
        pair.feed(p, b)
    pair.flush()
    bank = v.part(0).bank
    bank.s[F.cu_level, 0] = np.nextafter(bank.s[F.cu_level, 0], np.inf)
    v.part(0).dirty_rows[0] = True
    s.part(0).dirty.add(v.part(0).row_keys[0])
    with pytest.raises(AssertionError, match="checkpoints differ"):
        pair.flush()


def test_unknown_engine_is_refused(tiny_city):
    with pytest.raises(ValueError):
        StreamCore(Settings().replace(streams_engine="gpu"), tiny_city)
    assert Settings.from_env({"CITYBRAIN_STREAMS_ENGINE": "scalar"}).streams_engine == "scalar"
    assert Settings().streams_engine == "vector"
