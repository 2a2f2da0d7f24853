"""Simulated feeds: deterministic, speed-invariant, faults at their rates; record/replay round
trip through a real broker; CSV replay; scoring."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from citybrain.city import load_city
from ingest.senml import resolve_senml
from simulators import recording
from simulators.feed import Faults, Feed, Message
from simulators.publish import Pacer, publish_feed
from simulators.scenarios import CATALOGUE, build, suite
from simulators.score import score, table
from tests.conftest import SHARED
from tests.ingest_helpers import TINY

T0 = 1_795_339_200.0


@pytest.fixture(scope="module")
def tiny():
    return load_city(TINY)


def _bytes(feed):
    return [(m.t, m.topic, m.payload, m.qos, m.retain) for m in feed]


def test_same_seed_same_bytes_other_seed_other_bytes(demo_city):
    a = _bytes(Feed(demo_city, T0, seed=3, scenarios=suite(demo_city, "demo"), duration=90))
    b = _bytes(Feed(demo_city, T0, seed=3, scenarios=suite(demo_city, "demo"), duration=90))
    c = _bytes(Feed(demo_city, T0, seed=4, scenarios=suite(demo_city, "demo"), duration=90))
    assert a == b and a != c
    assert len(a) > 3000


def test_demo_scenarios_reach_alarm_limits_within_a_minute(demo_city):
    feed = Feed(demo_city, T0, scenarios=suite(demo_city, "demo"), duration=70, faults=Faults.none())
    truth = {t["event"]: t for t in feed.truth()}
    assert set(truth) == {"flood", "fire"}
    over = Counter()
    for m in feed:
        if m.topic.startswith("city/sensors/"):
            dev = m.topic.rsplit("/", 1)[1]
            v = json.loads(m.payload)[0]["v"]
            alarm = demo_city.devices[dev].limit("alarm")
            if alarm is not None and v > alarm:
                over[dev] += 1
        if m.topic.endswith("/events"):
            assert json.loads(m.payload)["after"]["score"] >= 0.85
    assert set(over) <= set(truth["flood"]["devices"]) | set(truth["fire"]["devices"]), "normal devices stay normal"
    assert all(over[d] >= 2 for d in truth["flood"]["devices"])


def test_every_catalogue_scenario_places_itself_with_truth(demo_city):
    for name in CATALOGUE:
        s = build(demo_city, name, 30.0)
        assert s is not None, name
        tr = s.truth(T0)
        assert tr["grid"] in demo_city.areas and tr["devices"] and tr["start"] == T0 + 30


def test_quiet_day_has_no_alarm_values(tiny):
    for m in Feed(tiny, T0, scenarios=suite(tiny, "quiet"), duration=3600, faults=Faults.none()):
        if m.topic.startswith("city/sensors/"):
            dev = m.topic.rsplit("/", 1)[1]
            warn = tiny.devices[dev].limit("warning")
            assert warn is None or json.loads(m.payload)[0]["v"] < warn


def test_faults_appear_at_their_rates(demo_city):
    clean = [m for m in Feed(demo_city, T0, duration=600, faults=Faults.none()) if "sensors" in m.topic]
    faulty = [m for m in Feed(demo_city, T0, duration=600, faults=Faults(0.02, 0.02, 0.02)) if "sensors" in m.topic]
    n = len(clean)
    dups = sum(c - 1 for c in Counter((m.topic, m.payload) for m in faulty).values())
    dropped = n - len({(m.topic, m.payload) for m in faulty})
    out_of_order = sum(1 for a, b in zip(faulty, faulty[1:]) if b.t < a.t)
    for observed in (dups, dropped, out_of_order):
        assert 0.01 * n < observed < 0.03 * n


def test_speed_changes_pacing_not_event_times(tiny, settings):
    msgs = list(Feed(tiny, time.time() - 20, duration=20, faults=Faults.none(), presence=False))
    got: list[bytes] = []
    out = settings.data_dir / "rec.gz"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    rec = threading.Thread(target=lambda: recording.record(settings, out, "city/sensors/#", stop))
    rec.start()
    time.sleep(0.5)
    fast = publish_feed(settings, msgs, speed=50.0)
    time.sleep(0.5)
    stop.set()
    rec.join()
    got = [m.payload for m in recording.read(out)]
    assert fast["wall_s"] < 5  # 20 s of event time at 50x
    assert sorted(got) == sorted(m.payload for m in msgs if m.topic.startswith("city/sensors/"))  # same bytes


def test_record_then_replay_gives_the_same_feed(tiny, settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    original = [Message(0, f"city/sensors/wl-0001/x{k}", f"p{k}".encode(), 1, False) for k in range(200)]
    first, second = settings.data_dir / "a.gz", settings.data_dir / "b.gz"
    for path, msgs in ((first, original), (second, None)):
        stop = threading.Event()
        th = threading.Thread(target=lambda p=path, s=stop: recording.record(settings, p, "city/sensors/wl-0001/#", s,
                                                                     max_messages=200, duration=20))
        th.start()
        time.sleep(0.5)
        publish_feed(settings, msgs if msgs is not None else list(recording.read(first)), speed=0, pool_size=1)
        th.join()
    a, b = list(recording.read(first)), list(recording.read(second))
    assert len(a) == 200
    assert [(m.topic, m.payload, m.qos, m.retain) for m in a] == [(m.topic, m.payload, m.qos, m.retain) for m in b]


def test_csv_replay_turns_nab_file_into_senml_of_a_device(tiny):
    path = SHARED / "data" / "nab" / "data" / "realKnownCause" / "ambient_temperature_system_failure.csv"
    msgs = list(recording.csv_feed(path, tiny, "tp-0001", shift_to=T0))
    rows = path.read_text().splitlines()[1:]
    assert len(msgs) == len(rows)
    assert msgs[-1].t == pytest.approx(T0)
    first = resolve_senml(json.loads(msgs[0].payload), now=0)[0]
    assert first["n"] == "tp-0001:temperature" and first["u"] == "Cel"
    assert first["v"] == pytest.approx(float(rows[0].split(",")[1]), abs=1e-3)
    step = msgs[1].t - msgs[0].t
    assert step > 0


def test_scoring_on_hand_made_cases(tiny):
    truth = [{"scenario": "flood", "event": "flood", "grid": "G1", "start": 1000.0, "end": 1600.0},
             {"scenario": "fire", "event": "fire", "grid": "G3", "start": 2000.0, "end": 2600.0},
             {"scenario": "gas", "event": "gas_leak", "grid": "G4", "start": 3000.0, "end": 3600.0}]
    incidents = [
        {"id": "A", "event": "flood", "area": "G1", "started_at": 1010.0, "detected_at": 1030.0},
        {"id": "B", "event": "fire", "area": "G4", "started_at": 2020.0, "detected_at": 2040.0},  # neighbour grid
        {"id": "C", "event": "noise", "area": "G2", "started_at": 500.0, "detected_at": 510.0},  # false
        {"id": "D", "event": "gas_leak", "area": "G4", "started_at": 9000.0, "detected_at": 9010.0},  # too late
    ]
    r = score(truth, incidents, tiny, device_hours=100.0)
    assert [e["found"] for e in r["events"]] == [True, True, False]
    assert r["events"][0]["right_grid"] and not r["events"][1]["right_grid"]
    assert r["events"][0]["delay_s"] == 10.0 and r["events"][0]["detect_delay_s"] == 30.0
    assert r["false_incidents"] == 2 and r["false_per_1000_device_hours"] == 20.0
    assert "NO" in table(r)


def test_small_fleet_has_a_last_will_per_device(tiny, settings):
    import paho.mqtt.client as mqtt

    from simulators.publish import Pool

    host, port = settings.mqtt
    seen: list[tuple[str, bytes]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="will-watch", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: seen.append((m.topic, m.payload))
    sub.connect(host, port)
    sub.subscribe("city/devices/+/status", qos=1)
    sub.loop_start()
    pool = Pool(settings, devices=sorted(tiny.devices))
    try:
        assert len(pool.clients) == len(tiny.devices)
        pool.by_device["wl-0001"].socket().close()  # the device vanishes without a DISCONNECT
        deadline = time.time() + 60  # the broker notices at keepalive x 1.5 at the latest
        while ("city/devices/wl-0001/status", b"offline") not in seen and time.time() < deadline:
            time.sleep(0.2)
        assert ("city/devices/wl-0001/status", b"offline") in seen
        assert all(t == "city/devices/wl-0001/status" for t, _ in seen)  # only that one
    finally:
        for c in pool.by_device.values():
            c.loop_stop()
            c.disconnect()
        sub.loop_stop()
        sub.disconnect()


def test_a_live_feed_faster_than_real_time_never_runs_ahead_of_the_clock():
    """`citybrain up --speed 10` starts an hour back; once it has caught up with the wall clock it
    waits for it (ingest would reject event times from the future)."""
    stop = threading.Event()
    for live, least, most in ((False, 0.0, 0.1), (True, 0.25, 0.6)):
        pacer = Pacer(100.0, live=live)
        now = time.time()
        pacer.wait(now - 1.0, stop)  # the feed's first message: a second back, at once
        t0 = time.monotonic()
        pacer.wait(now - 0.5, stop)  # 0.5 s of event time later: 5 ms at 100x
        pacer.wait(now + 0.3, stop)  # 13 ms at 100x, but not before its own time when live
        assert least <= time.monotonic() - t0 <= most
