"""Each detector on synthetic series with a known anomaly: found, and not found on the clean twin."""

from __future__ import annotations

import numpy as np
import pytest

from streams.detectors.baseline import SeasonalBaseline
from streams.detectors.camera import CameraLabel, CountBaseline
from streams.detectors.change import Cusum
from streams.detectors.episode import Episode
from streams.detectors.faults import Cadence, Flatline, PhysicalRange
from streams.detectors.likelihood import AnomalyLikelihood, log_score
from streams.detectors.limits import StaticLimits
from streams.detectors.rate import RateOfChange
from streams.monitor import RELEARN_AFTER_S, Monitor, sensor_monitor

T0 = 1_795_305_600.0  # a Monday 00:00 UTC... of some week; only differences matter
MIN = 60.0


def run(detector, ts, xs):
    """Findings of one detector over a series (through its episode, as the monitor runs it)."""
    m = Monitor("dev", "x", [detector])
    out: list = []
    m.step_many(np.asarray(ts, float), np.asarray(xs, float), out)
    return out


def noisy(n, level=10.0, sd=0.5, seed=1):
    return level + np.random.default_rng(seed).normal(0, sd, n)


def test_static_limits_need_two_readings_and_clear_with_hysteresis():
    ts = [T0 + i * MIN for i in range(8)]
    xs = [1, 1, 4.5, 1, 4.5, 4.6, 3.95, 1]  # glitch, then alarm twice, 3.95 stays "above" (hysteresis)
    lim = StaticLimits(warning=3.0, alarm=4.0)
    lim_found = run(lim, ts, xs)
    assert [f.active for f in lim_found] == [True]
    f = lim_found[0]
    assert f.t == ts[5] and f.started_at == ts[4] and f.score >= 0.85
    assert "alarm" in f.explanation
    clean = run(StaticLimits(3.0, 4.0), ts, [1, 1, 4.5, 1, 1, 1, 1, 1])
    assert clean == []  # a single reading above the alarm is not enough


def test_static_limits_back_to_normal_after_quiet_period():
    ts = [T0 + i * MIN for i in range(10)]
    found = run(StaticLimits(3.0, 4.0), ts, [4.5, 4.5, 1, 1, 1, 1, 1, 1, 1, 1])
    assert [f.active for f in found] == [True, False]
    assert found[1].started_at == ts[0] and found[1].t - ts[2] >= StaticLimits.rule.quiet_s


def rush_hour_series(days, spike_at=None):
    """Traffic flow with a daily profile: high at 8-9 a.m., low at night."""
    ts, xs = [], []
    rng = np.random.default_rng(3)
    for i in range(days * 24 * 4):  # every 15 min
        t = T0 + i * 900.0
        hour = ((t // 3600) % 24)
        level = 1000.0 if hour in (8, 9) else 100.0
        ts.append(t)
        xs.append(level + rng.normal(0, 10))
    if spike_at is not None:
        xs[spike_at] = 1000.0
    return ts, xs


def test_baseline_rush_hour_is_normal_3am_at_rush_level_is_not():
    days = 10
    night = (days - 1) * 96 + 3 * 4  # 3 a.m. on the last day
    ts, xs = rush_hour_series(days)
    assert run(SeasonalBaseline(), ts, xs) == []
    ts, xs = rush_hour_series(days, spike_at=night)
    xs[night + 1] = 1000.0  # two readings: the baseline episode needs two
    found = run(SeasonalBaseline(), ts, xs)
    assert len(found) >= 1 and found[0].active and found[0].started_at == ts[night]
    assert "usual" in found[0].explanation


def test_cusum_finds_a_small_level_shift_not_the_noise():
    xs = noisy(600)
    ts = T0 + np.arange(600) * MIN
    assert run(Cusum(), ts, xs) == []
    shifted = xs.copy()
    shifted[400:] += 1.0  # 2 spreads: too small for a limit, a clear change
    found = run(Cusum(), ts, shifted)
    assert found and found[0].active and 400 <= (found[0].t - T0) / MIN < 460


def city_days(days: float, every_s: float, change=None, seed: int = 5, sparse_s: float = 0.0):
    """A noisy sensor with a daily cycle (5 spreads) and lower weekends (3 spreads), every ``every_s``
    (every 5 minutes for the first ``sparse_s``); ``change(t)`` is added on top."""
    t = np.concatenate((T0 + np.arange(0.0, sparse_s, 300.0), T0 + np.arange(sparse_s, days * 86400, every_s)))
    d = (t - T0) / 86400
    x = 40 + 5 * np.sin(2 * np.pi * d) - 3.0 * ((d // 1) % 7 >= 5) + np.random.default_rng(seed).normal(0, 1, t.size)
    return t, x + (0.0 if change is None else change(t))


def change_findings(t, x):
    out: list = []
    sensor_monitor("aq-1", "pm25", {}, 0.0).step_many(t, x, out)
    return [f for f in out if f.detector == "change" and f.active]


@pytest.mark.parametrize("every_s", [30.0, 1.0])
def test_the_sensors_change_detector_finds_a_2_spread_shift_and_a_drift_not_the_weeks_rhythm(every_s):
    """The monitor's Cusum (against its seasonal profile, per time) finds what the fast
    baseline absorbs: before 2026-12-04 the shift was never found, the drift after 5-8 hours. The
    1 Hz sensor reports every 5 minutes in its first week (the profile learns for a week)."""
    days, at, sparse = (17.0, 10.3 * 86400, 0.0) if every_s >= 30 else (8.5, 8.0 * 86400, 7.6 * 86400)
    # weekends and days are the rhythm, not changes (the first week is learned, not judged)
    assert change_findings(*city_days(days, every_s, sparse_s=sparse)) == []
    for change, within_s in ((lambda t: 2.0 * (t >= T0 + at), 3600),
                             (lambda t: np.clip((t - T0 - at) / 3600, 0, None), 3 * 3600)):
        found = change_findings(*city_days(days, every_s, change, sparse_s=sparse))
        assert found and 0 <= found[0].t - (T0 + at) <= within_s, found[:1]
        assert found[0].started_at >= T0 + at - 600


@pytest.mark.parametrize(("kind", "harmless"), [("smoke", -4.0), ("power", 4.0)])
def test_a_shift_the_harmless_way_is_no_change(kind, harmless):
    """Smoke going down is no fire, power going up no outage (a quiet demo city raised a "fire"
    incident from a temperature sensor's shift down). The other way is still a change."""
    at = 10.3 * 86400
    for shift, alarmed in ((harmless, False), (-harmless, True)):
        t, x = city_days(12.0, 60.0, lambda t, shift=shift: shift * (t >= T0 + at))
        out: list = []
        sensor_monitor("d-1", kind, {}, 0.0).step_many(t, x, out)
        found = [f for f in out if f.active and f.t >= T0 + at and f.detector in ("change", "baseline")]
        assert bool(found) == alarmed, (shift, found[:2])


def test_in_the_first_week_the_change_detector_judges_against_the_fast_baseline():
    """The profile learns for a week; meanwhile the baseline stands in, so a large shift is still
    a change on a device's second day (a small one is absorbed, as before 2026-12-04)."""
    at = 1.3 * 86400
    found = change_findings(*city_days(2.0, 30.0, lambda t: 10.0 * (t >= T0 + at)))
    assert found and 0 <= found[0].t - (T0 + at) <= 300, found[:1]
    assert change_findings(*city_days(2.0, 30.0, lambda t: 2.0 * (t >= T0 + at))) == []


def test_the_baseline_asks_the_profile_before_calling_a_smooth_daily_rise_unusual():
    """A smooth, low-noise daily curve (temperature, 0.1 of noise on a swing of 10): the fast
    baseline's hour bucket still holds yesterday's end of the hour when the next one starts; once
    the profile knows the week, a reading near what the hour usually is is not unusual. A spike
    stays unusual to both."""
    t = T0 + np.arange(0.0, 12 * 86400, 30.0)
    x = 25 + 5 * np.sin(2 * np.pi * (t - T0) / 86400 - 2) + np.random.default_rng(3).normal(0, 0.1, t.size)
    spike = (t >= T0 + 10.3 * 86400) & (t < T0 + 10.3 * 86400 + 90)
    for xs, want in ((x, []), (np.where(spike, x + 5.0, x), [T0 + 10.3 * 86400])):
        out: list = []
        sensor_monitor("tp-1", "temperature", {}, 0.0).step_many(t, xs, out)
        late = sorted({f.started_at for f in out if f.detector == "baseline" and f.active and f.t > T0 + 8 * 86400})
        assert late == [min(t[t >= w]) for w in want]
    assert any(f.detector == "baseline" and f.t < T0 + 7 * 86400 for f in out)  # in the first week it still does


def test_a_cusum_checkpoint_from_before_the_profile_restores():
    m = sensor_monitor("aq-1", "pm25", {}, 0.0)
    cusum = m.detectors[-2]
    cusum.restore([[1.0, 0.5, 40.0], 3.0, 0.0, T0])  # the 2026-12-03 format: no profile
    assert (cusum.pos, cusum.since, cusum.last_t, cusum.profile.first_t) == (3.0, T0, None, None)
    out: list = []
    m.step_many(*city_days(1.0, 60.0), out)
    assert cusum.profile.first_t == T0 and cusum.last_t == T0 + 86400 - 60


def test_rate_of_change_water_rising_fast():
    ts = T0 + np.arange(60) * MIN
    slow = 1.0 + 0.001 * np.arange(60)
    assert run(RateOfChange("water_level"), ts, slow) == []
    fast = slow.copy()
    fast[40:] += 0.2 * np.arange(20)  # 20 cm per minute
    found = run(RateOfChange("water_level"), ts, fast)
    assert found and found[0].started_at == ts[41]


def test_rate_of_change_generic_kind_uses_learned_rates():
    ts = T0 + np.arange(300) * MIN
    xs = noisy(300)
    assert run(RateOfChange("vibration_x"), ts, xs) == []
    xs[250:253] += np.array([20.0, 40.0, 60.0])
    assert run(RateOfChange("vibration_x"), ts, xs)


def test_physical_range_and_flatline_are_faults():
    ts = T0 + np.arange(100) * MIN
    xs = noisy(100, level=50)
    assert run(PhysicalRange("pm25"), ts, xs) == []
    bad = xs.copy()
    bad[50] = -3.0
    f = run(PhysicalRange("pm25"), ts, bad)
    assert f and "physical range" in f[0].explanation
    assert run(Flatline(min_run=30), ts, xs) == []
    stuck = xs.copy()
    stuck[60:] = 42.0
    found = run(Flatline(min_run=30), ts, stuck)
    assert found and found[0].started_at == ts[89]


def test_silence_is_judged_against_the_device_cadence_on_event_time():
    m = sensor_monitor("wl-1", "water_level", {}, 0.0)
    out: list = []
    m.step_many(T0 + np.arange(20) * MIN, np.ones(20), out)
    last = T0 + 19 * MIN
    assert m.silence_started(last + 4 * MIN) is None  # a few missed readings: not yet
    f = m.silence_started(last + 30 * MIN)
    assert f is not None and f.detector == "silence" and f.started_at == last
    assert m.silence_started(last + 60 * MIN) is None  # reported once
    back: list = []
    m.step(last + 61 * MIN, 1.0, back)
    assert [(x.detector, x.active, x.started_at) for x in back] == [("silence", False, last)]


def test_silence_seen_only_when_the_device_resumes_gives_the_same_finding():
    a, b = sensor_monitor("d", "noise", {}, 0.0), sensor_monitor("d", "noise", {}, 0.0)
    ts = T0 + np.arange(20) * MIN
    for m in (a, b):
        m.step_many(ts, np.ones(20) * 50, [])
    by_timer = [a.silence_started(ts[-1] + 3600)]
    a.step(ts[-1] + 3600, 50.0, by_timer)
    by_gap: list = []
    b.step(ts[-1] + 3600, 50.0, by_gap)
    assert by_timer == by_gap


def test_cadence_unknown_until_a_rhythm_is_seen():
    c = Cadence()
    c.seen(T0)
    assert c.deadline() is None


@pytest.mark.parametrize("label", ["fire", "smoke"])
def test_camera_fire_needs_its_minimum_duration(label):
    found = run(CameraLabel(label), [T0, T0 + 5, T0 + 10], [0.85, 0.85, 0.86])
    assert len(found) == 1 and found[0].t == T0 + 10 and found[0].started_at == T0
    assert found[0].score >= 0.5
    assert run(CameraLabel(label), [T0, T0 + 5], [0.85, 0.85]) == []  # 5 s is not 10 s
    assert run(CameraLabel(label), [T0, T0 + 5, T0 + 10, T0 + 20], [0.5, 0.5, 0.6, 0.6]) == []  # weak


def test_camera_person_counts_against_their_baseline():
    ts = T0 + np.arange(2000) * 300.0
    counts = np.random.default_rng(5).poisson(20, 2000).astype(float)
    assert run(CountBaseline("person"), ts, counts) == []
    counts[1900:1910] = 200.0
    found = run(CountBaseline("person"), ts, counts)
    assert found and found[0].started_at == ts[1900]


def test_episode_re_reports_only_on_material_change_with_same_start():
    ep = Episode(StaticLimits.rule)
    outs = [ep.update("limits", "d", "k", T0 + i, 1.0, s, "") for i, s in enumerate([0.6, 0.6, 0.62, 0.9, 0.91])]
    reported = [o for o in outs if o is not None]
    assert [o.score for o in reported] == [0.6, 0.9]
    assert {o.started_at for o in reported} == {T0}


def test_detectors_do_not_learn_from_anomalies():
    m = sensor_monitor("wl-1", "water_level", {}, 0.0)
    ts = T0 + np.arange(200) * MIN
    xs = noisy(200, level=1.0, sd=0.01)
    xs[100:150] = 5.0  # a long flood: must not become the baseline
    m.step_many(ts, xs, [])
    base = next(d for d in m.detectors if isinstance(d, SeasonalBaseline))
    level, _ = base.expected(ts[-1])
    assert abs(level - 1.0) < 0.05


@pytest.mark.parametrize("every_s", [60.0, 10.0, 1.0])
def test_a_long_anomaly_becomes_the_new_normal_after_the_same_event_time_at_any_cadence(every_s):
    """The guarded detectors learn an anomaly once it has lasted RELEARN_AFTER_S of event time.
    Before 2026-12-07 the rule counted 200 readings: a 1 Hz sensor's 15-spread shift was "normal"
    (its baseline episode closed) after ~18 minutes, one every 10 s after ~1 hour."""
    at = 1.1 * 86400  # the first day every 5 minutes (every minute at 60 s), then every ``every_s``
    t, x = city_days(1.4, every_s, lambda t: 15.0 * (t >= T0 + at), sparse_s=1.05 * 86400 if every_s < 60 else 0.0)
    out: list = []
    sensor_monitor("m-1", "mystery", {}, 0.0).step_many(t, x, out)
    base = [f for f in out if f.detector == "baseline" and f.t >= T0 + at - 600]
    assert base[0].active and base[0].t - (T0 + at) <= 60
    closed = next(f for f in base if not f.active)
    assert RELEARN_AFTER_S <= closed.t - (T0 + at) <= RELEARN_AFTER_S + 1800, (closed.t - T0 - at) / 60


def test_state_round_trip_gives_identical_behaviour():
    a = sensor_monitor("wl-1", "water_level", {"warning": 3.0, "alarm": 4.0}, 0.0)
    ts = T0 + np.arange(300) * MIN
    xs = noisy(300, level=1.0, sd=0.05)
    xs[200:210] = 4.5
    a.step_many(ts[:205], xs[:205], [])
    b = sensor_monitor("wl-1", "water_level", {"warning": 3.0, "alarm": 4.0}, 0.0)
    import json
    b.restore(json.loads(json.dumps(a.state())))
    fa: list = []
    fb: list = []
    a.step_many(ts[205:], xs[205:], fa)
    b.step_many(ts[205:], xs[205:], fb)
    assert fa == fb and fa


def _feed(al, raws):
    """Score-then-learn over raw scores: the likelihood of each."""
    out = []
    for r in raws:
        out.append(al.score_one(r))
        al.learn_one(r)
    return out


def test_likelihood_high_for_a_spike_after_calm_low_for_noise_like_its_history():
    rng = np.random.default_rng(3)
    calm = np.clip(rng.normal(0.1, 0.03, 1000), 0, 1)
    al = AnomalyLikelihood(short=10, long=500, learn_n=300)
    first = _feed(al, calm)
    assert first[:300] == [0.0] * 300  # warm-up: no opinion
    assert max(log_score(v) for v in first[300:]) < 0.4  # noise like its own history stays low
    assert al.score_one(1.0) > 0.9999 and log_score(al.score_one(1.0)) > 0.5  # a jump after calm
    # scoring does not learn: the same question gets the same answer
    assert al.score_one(1.0) == al.score_one(1.0)


def test_likelihood_noisy_source_earns_nothing_for_being_noisy():
    """The same raw score is alarming on a calm source and normal on a noisy one."""
    rng = np.random.default_rng(4)
    calm, noisy_al = AnomalyLikelihood(), AnomalyLikelihood()
    _feed(calm, np.clip(rng.normal(0.05, 0.02, 800), 0, 1))
    _feed(noisy_al, rng.uniform(0, 1, 800))
    assert calm.score_one(1.0) > 0.9999 and noisy_al.score_one(1.0) < 0.99


def test_likelihood_memory_is_bounded_and_log_score_is_monotone():
    al = AnomalyLikelihood(short=5, long=50, learn_n=10)
    _feed(al, np.linspace(0, 1, 1000))
    assert len(al.history) == 50 and len(al.recent) == 5
    assert al.h_sum == pytest.approx(sum(al.history))
    assert log_score(0.0) == 0.0 and log_score(0.99999) == pytest.approx(0.5, abs=1e-3)
    assert log_score(0.9) < log_score(0.999) < log_score(1.0) == pytest.approx(1.0)
