"""Fusion by grid: corroboration, neighbours, material change only, auto-resolve, outages, expiry."""

from __future__ import annotations

from citybrain.records import message_id
from streams.detectors.base import Finding
from streams.fusion import GridFusion

T0 = 1_795_339_200.0


def finding(source, kind, score, t=T0, detector="baseline", active=True, started=None):
    return Finding(detector, source, kind, t, 1.0, score, T0 if started is None else started, "why", active)


def two_neighbours(city):
    g = sorted(city.neighbours)[0]
    return g, sorted(city.neighbours[g])[0]


def test_a_lone_weak_signal_stays_a_minor_possible_warning(demo_city):
    fu = GridFusion(demo_city)
    g, _ = two_neighbours(demo_city)
    [w] = fu.add(finding("n-1", "noise", 0.3), g)
    assert (w.event, w.severity, w.certainty, w.active) == ("noise", "Minor", "Possible", True)
    assert w.grid == g and w.district == demo_city.district_of(g) and w.started_at == T0
    assert w.id == message_id("fusion", "noise", g, "baseline", "n-1", repr(T0))


def test_corroboration_from_a_neighbour_raises_certainty_under_the_same_id(demo_city):
    fu = GridFusion(demo_city)
    g, n = two_neighbours(demo_city)
    [w1] = fu.add(finding("wl-1", "water_level", 0.5), g)
    [w2] = fu.add(finding("rf-1", "rainfall", 0.5, t=T0 + 60), n)
    assert w1.id == w2.id and w2.grid == g and w2.event == "flood"
    assert w2.score > w1.score and w2.certainty in ("Likely", "Observed")
    assert {e.source for e in w2.evidence} == {"wl-1", "rf-1"}
    [w3] = fu.add(finding("cam-1", "camera", 0.6, t=T0 + 90, detector="camera_fire"), g)
    assert w3.event == "fire" and w3.id != w1.id  # a different event is a different situation


def test_no_re_emission_without_material_change(demo_city):
    fu = GridFusion(demo_city)
    g, _ = two_neighbours(demo_city)
    assert fu.add(finding("wl-1", "water_level", 0.5), g)
    assert fu.add(finding("wl-1", "water_level", 0.52, t=T0 + 60), g) == []
    assert fu.add(finding("wl-1", "water_level", 0.51, t=T0 + 60, detector="rate"), g) == []  # same device
    [w] = fu.add(finding("wl-1", "water_level", 0.95, t=T0 + 120, detector="limits"), g)
    assert w.severity == "Extreme"


def test_back_to_normal_when_all_sources_are(demo_city):
    fu = GridFusion(demo_city)
    g, n = two_neighbours(demo_city)
    [w] = fu.add(finding("wl-1", "water_level", 0.8), g)
    fu.add(finding("wl-2", "water_level", 0.8), n)
    assert fu.add(finding("wl-1", "water_level", 0, t=T0 + 600, active=False), g)  # still one source
    [end] = fu.add(finding("wl-2", "water_level", 0, t=T0 + 900, active=False), n)
    assert end.id == w.id and not end.active and end.t == T0 + 900
    assert fu.open == {}


def test_many_silent_devices_in_one_area_are_a_power_outage(demo_city):
    fu = GridFusion(demo_city)
    g, n = two_neighbours(demo_city)
    ws = []
    for i, grid in enumerate((g, n, g)):
        ws += fu.add(finding(f"d-{i}", "noise", 0.6, detector="silence"), grid)
    assert [w.event for w in ws] == ["device_offline", "device_offline", "power_outage"]
    assert len({w.id for w in ws}) == 1


def test_devices_that_went_silent_days_apart_are_no_power_outage(demo_city):
    """"At once": the silences' spans (last reading to deadline) must share an instant. Two
    devices dead for two days and one that stops now are device trouble; two more that stop with
    the third (each noticed after its own cadence, one by its last will) make it an outage."""
    fu = GridFusion(demo_city)
    g, n = two_neighbours(demo_city)
    now = T0 + 2 * 86400
    ws = fu.add(finding("old-1", "noise", 0.6, t=T0 + 300, detector="silence", started=T0), g)
    ws += fu.add(finding("old-2", "noise", 0.6, t=T0 + 4000, detector="silence", started=T0 + 3000), n)
    ws += fu.add(finding("new-1", "noise", 0.6, t=now + 300, detector="silence", started=now - 30), g)
    assert [w.event for w in ws] == ["device_offline"] * 3
    ws = fu.add(finding("new-2", "noise", 0.6, t=now + 1500, detector="silence", started=now - 290), n)
    ws += fu.add(finding("new-3", "power", 0.6, t=now + 500, detector="presence", started=now + 500), g)
    assert [w.event for w in ws] == ["device_offline", "power_outage"]
    assert {e.source for e in ws[-1].evidence} == {"old-1", "old-2", "new-1", "new-2", "new-3"}


def test_evidence_expires_when_its_source_stops_reporting(demo_city):
    fu = GridFusion(demo_city, expire_s=600)
    g, _ = two_neighbours(demo_city)
    fu.add(finding("cam-1", "camera", 0.9, detector="camera_fire"), g)
    assert fu.advance(T0 + 500, lambda f: T0) == []
    assert fu.advance(T0 + 5000, lambda f: T0 + 4800) == []  # the camera still reports: still burning
    [end] = fu.advance(T0 + 5500, lambda f: T0 + 4800)
    assert not end.active and end.t == T0 + 4800 + 600
    silent = GridFusion(demo_city, expire_s=600)
    silent.add(finding("d-1", "noise", 0.6, detector="silence"), g)
    assert silent.advance(T0 + 10_000, lambda f: T0) == []  # silence evidence is about silence


def test_state_round_trip(demo_city):
    import json
    a = GridFusion(demo_city)
    g, n = two_neighbours(demo_city)
    a.add(finding("wl-1", "water_level", 0.5), g)
    b = GridFusion(demo_city)
    b.restore(json.loads(json.dumps(a.state())))
    assert a.add(finding("rf-1", "rainfall", 0.5, t=T0 + 60), n) == b.add(finding("rf-1", "rainfall", 0.5, t=T0 + 60), n)
