"""The pure processing core on event time: lateness, dead letters, duplicates, replay invariance, restore."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from citybrain.clock import ManualClock
from citybrain.records import CameraEvent, Presence, SignalBatch
from citybrain.settings import Settings
from streams.core import StreamCore

T0 = 1_795_339_200.0


def device_of(city, kind):
    return next(d for d in city.devices.values() if d.kind == kind and d.limits)


def make_batch(rows, events=()):
    """rows: (device, kind, grid, t, value)."""
    rows = list(rows)
    return SignalBatch(device=tuple(r[0] for r in rows), name=tuple(r[1] for r in rows),
                       grid=tuple(r[2] for r in rows), t=tuple(r[3] for r in rows),
                       value=tuple(r[4] for r in rows), ids=tuple(f"{r[0]}|{r[3]}" for r in rows),
                       events=tuple(e.to_dict() for e in events))


def recorded_feed(city):
    """A time-ordered feed: normal readings, a flood, a camera fire, a device that goes quiet."""
    wl = city.devices["wl-00001"]
    pm = device_of(city, "pm25")
    cam = next(d for d in city.devices.values() if d.kind == "camera")
    rng = np.random.default_rng(11)
    items = []  # (t, row or event)
    for i in range(300):
        t = T0 + 60 * i
        level = 1.0 + rng.normal(0, 0.02) + (4.0 if 150 <= i < 170 else 0.0)
        items.append((t, (wl.id, "water_level", wl.area, t, round(level, 4))))
        if i < 120:  # pm25 sensor stops reporting after two hours
            items.append((t + 1, (pm.id, "pm25", pm.area, t + 1, round(30 + rng.normal(0, 2), 3))))
    for j in range(5):
        t = T0 + 100 * 60 + 5 * j
        items.append((t, CameraEvent(cam.id, "update", "obj1", "fire", 0.9, 0.9, t, T0 + 100 * 60, grid=cam.area)))
    items.append((T0 + 110 * 60, CameraEvent(cam.id, "end", "obj1", "fire", 0.9, 0.9, T0 + 110 * 60,
                                             T0 + 100 * 60, T0 + 110 * 60, grid=cam.area)))
    items.sort(key=lambda it: it[0])
    return [it[1] for it in items]


def batches_of(feed, size):
    for i in range(0, len(feed), size):
        chunk = feed[i:i + size]
        yield make_batch([x for x in chunk if isinstance(x, tuple)], [x for x in chunk if not isinstance(x, tuple)])


def run_feed(city, batches, settings=None):
    core = StreamCore(settings or Settings(), city, ManualClock())
    warnings, dead = [], []
    for b in batches:
        out = core.process(0, b)
        warnings += out.warnings
        dead += out.dead_letters
    return core, warnings, dead


def test_feed_gives_flood_fire_and_silence_warnings(demo_city):
    core, ws, dead = run_feed(demo_city, batches_of(recorded_feed(demo_city), 10))
    events = {(w.event, w.active) for w in ws}
    assert ("flood", True) in events and ("flood", False) in events
    assert ("fire", True) in events and ("fire", False) in events
    assert ("device_offline", True) in events
    flood = next(w for w in ws if w.event == "flood")
    assert flood.started_at == T0 + 150 * 60 and flood.severity in ("Severe", "Extreme")
    assert dead == [] and core.counts["too_late"] == 0


@pytest.mark.parametrize("sizes", [(1, 500), (7, 64), (3, 10_000)])
def test_replay_speed_and_batching_do_not_change_warnings(demo_city, sizes):
    feed = recorded_feed(demo_city)
    _, a, _ = run_feed(demo_city, batches_of(feed, sizes[0]))
    _, b, _ = run_feed(demo_city, batches_of(feed, sizes[1]))
    assert len(a) >= 5 and {w.event for w in a} >= {"flood", "fire", "device_offline"}
    assert per_grid(a) == per_grid(b)  # same warnings, in the same order for each key (grid)


def per_grid(warnings):
    out: dict[str, list] = {}
    for w in warnings:
        out.setdefault(w.grid, []).append(w.to_dict())
    return out


def test_late_events_within_grace_are_processed_too_late_are_dead_letters(demo_city):
    wl = demo_city.devices["wl-00001"]
    s = Settings().replace(allowed_lateness_s=30.0, grace_s=60.0)
    core = StreamCore(s, demo_city, ManualClock(5.0))
    row = lambda t, v=1.0: (wl.id, "water_level", wl.area, t, v)  # noqa: E731
    core.process(0, make_batch([row(T0 + 1000)]))
    out = core.process(0, make_batch([row(T0 + 950), row(T0 + 920), row(T0 + 900), row(T0 + 500)]))
    # watermark = 1000 - 30 = 970: 950 and 920 are late but within grace (>= 910); 900 and 500 are too late
    assert core.counts["late"] == 2 and core.counts["too_late"] == 2 and core.counts["readings"] == 3
    assert [d.reason for d in out.dead_letters] == ["too_late", "too_late"]
    d = out.dead_letters[0]
    assert d.stage == "streams" and d.device == wl.id and d.received_at == 5.0
    assert json.loads(base64.b64decode(d.payload_b64))["t"] == T0 + 900
    assert core.watermarks() == {0: T0 + 1000 - 30}


def test_a_batch_is_judged_in_event_time_order(demo_city):
    """Columns carry no arrival order: a batch is sorted by event time, so nothing in it is late to itself."""
    wl = demo_city.devices["wl-00001"]
    rows = [(wl.id, "water_level", wl.area, T0 + t, 1.0) for t in (0, 600, 30, 1200, 90, 2000, 150)]
    a, _, da = run_feed(demo_city, [make_batch(rows)])
    assert a.counts["late"] == 0 and a.counts["readings"] == 7 and da == []
    b, _, db = run_feed(demo_city, [make_batch(sorted(rows, key=lambda r: r[3]))])
    assert a.counts == b.counts
    c, _, dc = run_feed(demo_city, [make_batch([r]) for r in rows])  # one by one: arrival order is known
    assert c.counts["too_late"] == 3 and [d.reason for d in dc] == ["too_late"] * 3


def test_late_camera_event_is_dead_lettered(demo_city):
    cam = next(d for d in demo_city.devices.values() if d.kind == "camera")
    core = StreamCore(Settings(), demo_city, ManualClock())
    ev = lambda t: CameraEvent(cam.id, "update", "o", "fire", 0.9, 0.9, t, t, grid=cam.area)  # noqa: E731
    core.process(1, make_batch([], [ev(T0 + 10_000)]))
    out = core.process(1, make_batch([], [ev(T0)]))
    assert [d.reason for d in out.dead_letters] == ["too_late"] and out.warnings == []


def test_duplicates_are_dropped_and_bad_events_become_dead_letters(demo_city):
    wl = demo_city.devices["wl-00001"]
    core = StreamCore(Settings(), demo_city, ManualClock())
    b = make_batch([(wl.id, "water_level", wl.area, T0, 1.0)])
    core.process(0, b)
    core.process(0, b)
    assert core.counts["duplicates"] == 1 and core.counts["readings"] == 1
    bad = SignalBatch(events=({"type": "camera_event", "camera": "x"}, {"type": "nope"}))
    out = core.process(0, bad)
    assert [d.reason for d in out.dead_letters] == ["bad_event", "bad_event"]
    ragged = SignalBatch(device=(wl.id,), name=("water_level",), grid=(wl.area,), t=(T0, T0 + 1), value=(1.0,))
    assert [d.reason for d in core.process(0, ragged).dead_letters] == ["bad_batch"]
    nan = make_batch([(wl.id, "water_level", wl.area, T0 + 60, float("nan"))])
    assert [d.reason for d in core.process(0, nan).dead_letters] == ["bad_value"]


def test_presence_offline_and_back(demo_city):
    d = demo_city.devices["wl-00001"]
    core = StreamCore(Settings(), demo_city, ManualClock())
    out = core.process(0, make_batch([], [Presence(d.id, False, T0, d.area)]))
    assert [(w.event, w.active) for w in out.warnings] == [("device_offline", True)]
    out = core.process(0, make_batch([], [Presence(d.id, True, T0 + 600, d.area)]))
    assert [(w.event, w.active) for w in out.warnings] == [("device_offline", False)]


def test_checkpoint_restore_mid_feed_gives_the_same_warnings(demo_city):
    feed = list(batches_of(recorded_feed(demo_city), 25))
    _, whole, _ = run_feed(demo_city, feed)
    first = StreamCore(Settings(), demo_city, ManualClock())
    ws = []
    for b in feed[:12]:
        ws += first.process(0, b).warnings
        snap = json.loads(json.dumps(first.checkpoint(0)))  # what the table would hold (only changes)
        if b is feed[0]:
            items = snap
        else:
            items.update(snap)
    second = StreamCore(Settings(), demo_city, ManualClock())
    assert second.restore(0, items) >= 2
    for b in feed[12:]:
        ws += second.process(0, b).warnings
    assert [w.to_dict() for w in ws] == [w.to_dict() for w in whole]


def dying_flood_feed(city):
    """A gauge floods, then stops reporting mid-flood: its evidence expires on event time."""
    wl = city.devices["wl-00001"]
    rows = [(wl.id, "water_level", wl.area, T0 + 60 * i, 1.0 + 0.01 * (i % 3) + (4.0 if i >= 40 else 0.0))
            for i in range(50)]
    other = device_of(city, "pm25")  # keeps the watermark moving after the gauge died
    rows += [(other.id, "pm25", other.area, T0 + 3000 + 60 * i, 30.0 + (i % 3)) for i in range(40)]
    rows.sort(key=lambda r: r[3])
    return [make_batch(rows[i:i + 7]) for i in range(0, len(rows), 7)]


def test_skipping_the_expiry_scan_changes_no_warning(demo_city):
    """The core skips GridFusion.advance while no evidence can expire; forcing the scan on every
    sweep gives the same warnings, and the dead gauge's flood does end by expiry."""
    feed = dying_flood_feed(demo_city)
    _, skipped, _ = run_feed(demo_city, feed)
    forced = StreamCore(Settings(), demo_city, ManualClock())
    always = []
    for b in feed:
        forced.part(0).expiry_due = float("-inf")  # as if anything could expire
        always += forced.process(0, b).warnings
    assert [w.to_dict() for w in skipped] == [w.to_dict() for w in always]
    flood = [w for w in skipped if w.event == "flood"]
    assert flood[0].active and not flood[-1].active


def test_checkpoints_carry_only_changed_situations_and_closed_ones_as_none(demo_city):
    feed = dying_flood_feed(demo_city)
    core = StreamCore(Settings(), demo_city, ManualClock())
    seen: dict[str, list] = {}
    for b in feed:
        core.process(0, b)
        ck = core.checkpoint(0)
        for k, v in ck.items():
            if k.startswith("f:"):
                seen.setdefault(k, []).append(v)
        assert "fusion" not in ck
    flood = [k for k in seen if k.endswith("|flood")]
    assert flood and seen[flood[0]][-1] is None  # opened, written while it changed, closed
    assert any(v is not None for v in seen[flood[0]])
    assert not any(k.startswith("f:") for k in core.checkpoint(0))  # nothing changed since


def test_a_changelog_with_the_old_single_fusion_key_restores_and_is_rewritten(demo_city):
    feed = list(batches_of(recorded_feed(demo_city), 25))
    _, whole, _ = run_feed(demo_city, feed)
    first = StreamCore(Settings(), demo_city, ManualClock())
    ws, items = [], {}
    for b in feed[:12]:
        ws += first.process(0, b).warnings
        items.update(json.loads(json.dumps(first.checkpoint(0))))
    st = first.part(0)
    legacy = {k: v for k, v in items.items() if not k.startswith("f:")}
    legacy["fusion"] = json.loads(json.dumps(st.fusion.state()))  # what the worker wrote before
    assert legacy["fusion"], "the feed must have an open situation at the cut"
    second = StreamCore(Settings(), demo_city, ManualClock())
    second.restore(0, legacy)
    ck = second.checkpoint(0, full=False)
    assert ck["fusion"] is None and len([k for k in ck if k.startswith("f:")]) == len(legacy["fusion"])
    for b in feed[12:]:
        ws += second.process(0, b).warnings
    assert [w.to_dict() for w in ws] == [w.to_dict() for w in whole]
