"""The vectorised sensor bank against the scalar monitors: same findings, same state, bit for bit.

Random city feeds (daily profiles, floods that outlast the relearn limit, spikes, stuck values,
out-of-range values, silences, repeated and late timestamps, several readings per device per
batch) go through both, batch by batch and with the core's silence sweeps in between. Findings
must be equal (rule, source, time, value, score, since, active and the explanation text) and
every device's checkpoint state equal, which compares the baselines' bytes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from citybrain.settings import Settings
from streams.core import StreamCore
from streams.detectors.base import Finding
from streams.detectors.change import Cusum
from streams.monitor import RELEARN_AFTER_S, Monitor, sensor_monitor
from streams.vector.bank import BASE, F, SensorBank, _rounds
from tests.test_streams_core import make_batch

T0 = 1_795_339_200.0

#: kind -> (level, noise sd, daily amplitude, limits, integer-valued)
KINDS = {
    "water_level": (1.0, 0.02, 0.05, {"warning": 2.0, "alarm": 3.0}, False),
    "rainfall": (2.0, 0.5, 0.0, {}, False),
    "traffic_speed": (50.0, 3.0, 15.0, {}, False),
    "traffic_flow": (800.0, 40.0, 400.0, {}, True),
    "pm25": (20.0, 2.0, 5.0, {"warning": 45.0}, False),
    "temperature": (18.0, 0.3, 4.0, {"alarm": 40.0}, False),
    "noise": (55.0, 2.0, 6.0, {"other": 1.0}, True),  # limits without warning/alarm
    "mystery": (0.0, 1.0, 0.0, {}, False),  # unknown kind: no physical range, learned rate
}


@dataclass
class Feed:
    utc_offset_s: float
    devices: list[tuple[str, str, dict]]
    batches: list[tuple[list[str], np.ndarray, np.ndarray]] = field(default_factory=list)


def device_series(rng: np.random.Generator, kind: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival key, event time, value) of one device: normal days plus the troubles of a city."""
    level, sd, amp, limits, integer = KINDS[kind]
    cad = float(rng.choice([60.0, 120.0, 300.0, 1800.0]))  # 1800: 25 days, the Cusum's profile past its first week
    gaps = cad * np.clip(1 + 0.05 * rng.standard_normal(n), 0.5, None)
    gaps[rng.random(n) < 0.01] = 0.0  # repeated timestamps
    for i in rng.choice(np.arange(100, n), size=2, replace=False):
        gaps[i] += rng.uniform(1800, 4 * 3600)  # silences
    key = T0 + rng.uniform(0, cad) + np.cumsum(gaps)
    t = key.copy()
    late = rng.random(n) < 0.01
    t[late] -= 2.5 * cad  # arrives late (after newer readings)
    hour = (t / 3600.0) % 24
    x = level + amp * np.sin(2 * np.pi * (hour - 8) / 24) + rng.normal(0, sd, n)
    a = int(rng.integers(n // 3, n // 2))
    dur = int(rng.integers(150, 350))  # at 60-120 s: sometimes longer than RELEARN_AFTER_S
    shift = 2.5 if kind == "water_level" else float(rng.uniform(8, 30)) * sd * (-1 if kind == "traffic_speed" else 1)
    x[a:a + dur] += shift * np.minimum(1.0, np.arange(min(dur, n - a)) / 8)
    for i in rng.choice(n, size=6, replace=False):
        x[i] += float(rng.choice([-1, 1])) * 20 * sd  # spikes
    s = int(rng.integers(100, n - 60))
    x[s:s + int(rng.integers(25, 60))] = x[s]  # stuck
    if kind in ("rainfall", "pm25"):
        x[rng.choice(n, size=3, replace=False)] = -5.0  # outside the physical range
    if integer:
        x = np.round(x)
    return key, t, x


def make_feed(seed: int, n_devices: int = 32, n: int = 1200) -> Feed:
    rng = np.random.default_rng(seed)
    kinds = list(KINDS)
    feed = Feed(float(rng.choice([0.0, 3600.0, -5 * 3600.0, 19800.0])), [])
    keys, ts, xs, devs = [], [], [], []
    for d in range(n_devices):
        kind = kinds[d % len(kinds)]
        name = f"dev-{seed}-{d:03d}"
        feed.devices.append((name, kind, dict(KINDS[kind][3])))
        k, t, x = device_series(rng, kind, n)
        keys.append(k)
        ts.append(t)
        xs.append(x)
        devs += [name] * n
    order = np.argsort(np.concatenate(keys), kind="stable")  # arrival order
    t_all, x_all, d_all = np.concatenate(ts)[order], np.concatenate(xs)[order], np.asarray(devs, object)[order]
    lo = 0
    while lo < t_all.size:
        hi = lo + int(rng.integers(20, 4 * n_devices))
        # the core's order: event time, then grouped by device (both stable)
        idx = np.arange(lo, min(hi, t_all.size))
        idx = idx[np.argsort(t_all[idx], kind="stable")]
        idx = idx[np.argsort(d_all[idx], kind="stable")]
        feed.batches.append((d_all[idx].tolist(), t_all[idx], x_all[idx]))
        lo = hi
    return feed


@dataclass
class Run:
    scalar: list[Finding]
    vector: list[Finding]
    monitors: dict[str, Monitor]
    bank: SensorBank
    rows: dict[str, int]
    max_run: float  # longest anomalous run seen, in event time (past RELEARN_AFTER_S: stale learning exercised)


def run_both(feed: Feed, bank: SensorBank | None = None, check_state_every: int = 25) -> Run:
    """Feed both implementations the same batches, comparing states every few batches."""
    monitors: dict[str, Monitor] = {}
    bank = SensorBank(feed.utc_offset_s) if bank is None else bank
    rows: dict[str, int] = {}
    for name, kind, limits in feed.devices:
        monitors[name] = sensor_monitor(name, kind, limits, feed.utc_offset_s)
        rows[name] = bank.add(name, kind, limits)
    scalar: list[Finding] = []
    vector: list[Finding] = []
    max_run = 0
    for b, (devs, t, x) in enumerate(feed.batches):
        for name in dict.fromkeys(devs):  # groups, in order
            sel = np.array([d == name for d in devs])
            monitors[name].step_many(t[sel], x[sel], scalar)
        vector += bank.process(np.array([rows[d] for d in devs]), t, x)
        if b % 7 == 3:  # the core's silence sweep at the watermark
            wm = float(t.max()) - 30.0
            scalar += [f for m in monitors.values() if (f := m.silence_started(wm)) is not None]
            vector += bank.silence_started(wm)
        if b % check_state_every == 0:
            assert_states(monitors, bank, rows)
        max_run = max(max_run, *(m.cadence.last_t - m.anomalous_since for m in monitors.values()
                                 if m.anomalous_since is not None), 0.0)
    return Run(scalar, vector, monitors, bank, rows, max_run)


def assert_states(monitors: dict[str, Monitor], bank: SensorBank, rows: dict[str, int]) -> None:
    for name, m in monitors.items():
        assert bank.state(rows[name]) == m.state(), name
    pend = bank.pending()
    assert [bool(pend[rows[n]]) for n in monitors] == [m.pending() for m in monitors.values()]


def first_difference(a: list[Finding], b: list[Finding]) -> str:
    for i, (fa, fb) in enumerate(zip(a, b, strict=False)):
        if fa != fb:
            return f"#{i}: scalar {fa} != bank {fb}"
    return f"lengths {len(a)} != {len(b)}"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_bank_gives_the_scalar_findings_and_state(seed, monkeypatch):
    spans = {True: 0, False: 0}  # rounds over consecutive rows (sliced) and over others (gathered)
    step = SensorBank._round

    def counted(self, r, *a):
        spans[bool(r[-1] - r[0] + 1 == r.size)] += 1
        return step(self, r, *a)

    monkeypatch.setattr(SensorBank, "_round", counted)
    run = run_both(make_feed(seed))
    assert spans[True] > 10 and spans[False] > 10, spans
    scalar, vector, monitors, bank, rows = run.scalar, run.vector, run.monitors, run.bank, run.rows
    assert scalar == vector, first_difference(scalar, vector)
    assert_states(monitors, bank, rows)
    for name, m in monitors.items():
        assert bank.last_seen(rows[name]) == m.cadence.last_t
    # the feed exercised every rule, opening and closing (else the equality proves little)
    seen = {(f.detector, f.active) for f in scalar}
    for rule in ("range", "flatline", "limits", "baseline", "change", "rate", "silence"):
        assert (rule, True) in seen and (rule, False) in seen, (rule, sorted(seen))
    assert any(f.active and f.score > f_prev.score and f.started_at == f_prev.started_at and f.detector ==
               f_prev.detector and f.source == f_prev.source for f_prev, f in zip(scalar, scalar[1:], strict=False))
    assert run.max_run > RELEARN_AFTER_S  # floods outlasted the relearn limit: stale learning compared too


def test_relearn_after_a_long_anomaly_is_covered():
    """A flood longer than RELEARN_AFTER_S: learned anyway, identically."""
    feed = Feed(0.0, [("w", "water_level", {"warning": 2.0, "alarm": 3.0}), ("m", "mystery", {})])
    t = T0 + 60.0 * np.arange(1500)
    x = 1.0 + 0.01 * np.sin(np.arange(1500))
    x[500:1000] += 2.5
    for lo in range(0, 1500, 3):
        feed.batches.append((["m"] * 3 + ["w"] * 3, np.r_[t[lo:lo + 3], t[lo:lo + 3]],
                             np.r_[x[lo:lo + 3] * 10, x[lo:lo + 3]]))
    run = run_both(feed)
    assert run.scalar == run.vector, first_difference(run.scalar, run.vector)
    assert_states(run.monitors, run.bank, run.rows)
    assert run.max_run > RELEARN_AFTER_S + 3000


def test_profile_weeks_rebases_and_fast_readings_are_covered(monkeypatch):
    """The Cusum's seasonal profile past its first week, a rebase (a shift that became the new
    normal), readings closer than FULL_S (counted in part) and a daily step the profile does not
    interpolate across: identical."""
    rebases: list[tuple[bool, float]] = []  # (against the profile, the shift) of each scalar rebase
    orig = Cusum.rebase

    def spy(self):
        rebases.append((self.profiled, self.dev))
        return orig(self)

    monkeypatch.setattr(Cusum, "rebase", spy)
    rng = np.random.default_rng(11)
    gaps = np.r_[np.full(1100, 600.0), np.full(2000, 60.0)]  # a week every 10 min, then every minute
    gaps[200:260] = 2.0  # a burst: 2 s apart
    gaps[1300:1340] = 0.5
    t = T0 + np.cumsum(gaps)
    day = (t - T0) / 86400.0
    x = 40 + 5 * np.sin(2 * np.pi * day) + rng.normal(0, 1, t.size)
    x[(day > 3) & (day < 5)] += 3.0  # in the first week: judged against the fallback, learned as it is
    x[day > 8.0] -= 3.0  # after it: a change, then (after RELEARN_AFTER_S) the new normal
    hour = ((t - T0) / 3600.0) % 24
    b = 2 * x + 7 + 30 * ((hour >= 9) & (hour < 18))  # office hours: a step, not interpolated
    feed = Feed(3600.0, [("a", "pm25", {}), ("b", "mystery", {})])
    for lo in range(0, t.size, 4):
        sl = slice(lo, lo + 4)
        k = t[sl].size
        feed.batches.append((["a"] * k + ["b"] * k, np.r_[t[sl], t[sl]], np.r_[x[sl], b[sl]]))
    run = run_both(feed)
    assert run.scalar == run.vector, first_difference(run.scalar, run.vector)
    assert_states(run.monitors, run.bank, run.rows)
    assert any(p and d < -2 for p, d in rebases), rebases  # the profile moved by the late shift
    assert any(f.detector == "change" and f.active for f in run.scalar)


def test_interleaved_input_gives_each_device_its_findings_in_order():
    """Input not grouped by device: per device the same findings (the order across devices differs)."""
    feed = make_feed(5, n_devices=16, n=700)
    scalar = run_both(feed).scalar
    bank = SensorBank(feed.utc_offset_s)
    rows = {name: bank.add(name, kind, limits) for name, kind, limits in feed.devices}
    rng = np.random.default_rng(0)
    vector: list[Finding] = []
    for b, (devs, t, x) in enumerate(feed.batches):
        keys = rng.random(len(devs))  # a random interleaving that keeps each device's own order
        dev_arr = np.asarray(devs, object)
        for name in set(devs):
            at = np.flatnonzero(dev_arr == name)
            keys[at] = np.sort(keys[at])
        mixed = np.argsort(keys)
        vector += bank.process(np.array([rows[devs[i]] for i in mixed]), t[mixed], x[mixed])
        if b % 7 == 3:
            vector += bank.silence_started(float(t.max()) - 30.0)
    for name, _, _ in feed.devices:
        assert [f for f in scalar if f.source == name] == [f for f in vector if f.source == name], name


def test_rounds_keep_each_devices_order():
    rows = np.array([3, 1, 3, 3, 0, 1, 7])
    rounds = _rounds(rows)
    assert [r.tolist() for r in rounds] == [[4, 1, 0, 6], [5, 2], [3]]  # per round, by row


def test_restore_from_scalar_and_back():
    feed = make_feed(6, n_devices=8, n=400)
    run = run_both(feed)
    monitors = run.monitors
    other = SensorBank(feed.utc_offset_s)
    for name, kind, limits in feed.devices:
        r = other.add(name, kind, limits)
        other.restore(r, monitors[name].state())
        assert other.state(r) == monitors[name].state()
        assert other.monitor(r).state() == monitors[name].state()
    assert len(other) == len(run.bank)


def test_a_one_ulp_state_difference_is_caught():
    """The state comparison is exact: one ulp in one baseline slot of one device fails it."""
    feed = make_feed(7, n_devices=8, n=300)
    run = run_both(feed)
    monitors, bank, rows = run.monitors, run.bank, run.rows
    assert_states(monitors, bank, rows)
    row = rows[feed.devices[3][0]]
    bank.bl[0, row, 192] = np.nextafter(bank.bl[0, row, 192], np.inf)
    with pytest.raises(AssertionError):
        assert_states(monitors, bank, rows)
    bank.bl[0, row, 192] = np.nextafter(bank.bl[0, row, 192], -np.inf)
    assert_states(monitors, bank, rows)
    bank.s[F.cu_pos, row] += 1e-12
    with pytest.raises(AssertionError):
        assert_states(monitors, bank, rows)


def test_a_perturbed_bank_gives_different_findings():
    """The findings comparison can fail: a bank whose baseline episodes close 60 s later is caught."""
    feed = make_feed(1)
    bank = SensorBank(feed.utc_offset_s)
    bank.p.rules.quiet_s[BASE] += 60.0
    run = run_both(feed, bank, check_state_every=10**9)
    scalar, vector = run.scalar, run.vector
    assert scalar != vector
    assert [f for f in scalar if f.detector != "baseline"] == [f for f in vector if f.detector != "baseline"]


#: kind -> (level, noise sd) for the city feed
CITY_LEVELS = {"water_level": (1.0, 0.02), "pm25": (30.0, 3.0), "smoke": (5.0, 0.5), "noise": (55.0, 2.0),
               "temperature": (20.0, 0.5), "traffic_speed": (50.0, 3.0), "gas": (1.0, 0.1),
               "traffic_flow": (800.0, 40.0), "power": (500.0, 20.0), "rainfall": (2.0, 0.5),
               "occupancy": (40.0, 3.0), "vibration": (2.0, 0.2)}


def test_bank_matches_the_monitors_the_stream_core_builds(demo_city, monkeypatch):
    """The core's own monitors (its configuration per device, its batching and sweeps) vs the bank.

    Every ``Monitor.step_many`` and ``silence_started`` the core makes on a sensor monitor is
    replayed on a bank that adopted that monitor when the core created it.
    """
    core = StreamCore(Settings().replace(streams_engine="scalar"), demo_city)  # the scalar core's monitors
    bank = SensorBank(core.utc_offset_s)
    rows: dict[int, int] = {}
    calls = {"step_many": 0, "silence": 0, "findings": 0}
    kinds_seen: set[str] = set()
    step_many, silence_started = Monitor.step_many, Monitor.silence_started

    def spy_step(m, t, x, out):
        if id(m) not in rows:
            rows[id(m)] = bank.add_monitor(m)  # fresh: adopted before its first reading
        n0 = len(out)
        step_many(m, t, x, out)
        got = bank.process(np.full(t.size, rows[id(m)]), t, x)
        assert got == out[n0:], m.source
        assert bool(bank.pending()[rows[id(m)]]) == m.pending()
        calls["step_many"] += 1
        calls["findings"] += len(got)
        kinds_seen.update(f.detector for f in got)

    def spy_silence(m, wm):
        f = silence_started(m, wm)
        assert bank.silence_started(wm, rows=[rows[id(m)]]) == ([f] if f is not None else []), m.source
        calls["silence"] += 1
        return f

    monkeypatch.setattr(Monitor, "step_many", spy_step)
    monkeypatch.setattr(Monitor, "silence_started", spy_silence)
    rng = np.random.default_rng(21)
    by_kind: dict[str, list] = {}
    for d in demo_city.devices.values():
        if d.kind != "camera" and len(by_kind.setdefault(d.kind, [])) < 4:
            by_kind[d.kind].append(d)
    sensors = [(d.id, d.kind, d.area) for ds in by_kind.values() for d in ds]
    pm = by_kind["pm25"][0]
    sensors += [("not-in-city-1", "water_level", "g1"), (pm.id, "temperature", pm.area)]  # generic; kind differs
    items = []
    for j, (dev, kind, grid) in enumerate(sensors):
        level, sd = CITY_LEVELS[kind]
        quiet = range(200, 240) if j % 9 == 4 else range(0)
        for i in range(-85, 600):  # a first week every 2 hours (the profile learns), then 20 h every 2 min
            if i in quiet:
                continue
            t = T0 + (7200.0 * (i + 85) if i < 0 else 85 * 7200.0 + 120.0 * i) + j
            v = level + rng.normal(0, sd) + (3.5 * min(1.0, (i - 299) / 5) if kind == "water_level" and 300 <= i < 330 else 0.0)
            v += 3 * sd if kind == "pm25" and 450 <= i < 510 else 0.0  # a level shift, in the second week
            v += 12 * sd if rng.random() < 0.003 else 0.0
            if j % 7 == 2 and 400 <= i < 440:
                v = level
            items.append((dev, kind, grid, t, round(float(v), 4)))
    items.sort(key=lambda it: it[3])
    warnings = []
    for lo in range(0, len(items), 157):
        warnings += core.process(0, make_batch(items[lo:lo + 157])).warnings
    st = core.part(0)
    for key, m in st.monitors.items():
        assert bank.state(rows[id(m)]) == m.state(), key
    assert len(rows) == len(sensors) and calls["silence"] > 0 and warnings
    assert {"limits", "baseline", "change", "rate", "flatline", "silence"} <= kinds_seen, kinds_seen


def test_add_monitor_refuses_what_the_bank_would_not_run_exactly():
    from streams.monitor import count_monitor, label_monitor

    bank = SensorBank(3600.0)
    assert bank.add_monitor(sensor_monitor("a", "water_level", {"warning": 2.0}, 3600.0)) == 0
    for m in (label_monitor("cam", "fire"), count_monitor("cam", "person", 3600.0),
              sensor_monitor("b", "water_level", {}, 0.0)):  # another time zone
        with pytest.raises(ValueError):
            bank.add_monitor(m)
    assert len(bank) == 1
