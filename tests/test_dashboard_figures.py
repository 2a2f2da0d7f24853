"""Pure parts of the screen: risk index, map geometry and traces, aggregation, charts, KPIs."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from citybrain.records import Evidence, HistoryEntry, Incident
from dashboard import figures, risk
from dashboard.data import queue_order, response_times

NOW = 1_795_339_350.0


def incident(city, grid: str, severity="Severe", state="new", iid="INC-1", detected=NOW, warnings=("w1",),
             history=(), evidence=()) -> Incident:
    return Incident(id=iid, event="flood", category="Met", severity=severity, urgency="Immediate",
                    certainty="Likely", state=state, area=grid, district=city.district_of(grid),
                    location=city.areas[grid].centroid, started_at=detected - 60, detected_at=detected,
                    updated_at=detected, warnings=warnings, history=history, evidence=evidence)


# ---------------------------------------------------------------- risk index


def test_risk_grows_with_severity_and_waiting_and_saturates(demo_city):
    g = demo_city.grids[0].id
    minor = risk.compute(demo_city, [incident(demo_city, g, "Minor")], [], NOW).of(g)
    severe = risk.compute(demo_city, [incident(demo_city, g, "Severe")], [], NOW).of(g)
    extreme = risk.compute(demo_city, [incident(demo_city, g, "Extreme")], [], NOW).of(g)
    assert 0 < minor < severe < extreme <= 100
    assert risk.bucket(extreme) == len(risk.BUCKETS) - 1  # one new extreme incident reads "critical"
    waited = risk.compute(demo_city, [incident(demo_city, g, "Severe", detected=NOW - 900)], [], NOW).of(g)
    assert waited > severe  # unacknowledged past the target raises the index
    acked = risk.compute(demo_city, [incident(demo_city, g, "Severe", state="acknowledged")], [], NOW).of(g)
    assert acked < severe
    many = [incident(demo_city, g, "Extreme", iid=f"I{k}") for k in range(50)]
    assert risk.compute(demo_city, many, [], NOW).of(g) <= 100.0
    closed = risk.compute(demo_city, [incident(demo_city, g, state="closed")], [], NOW)
    assert closed.of(g) == 0.0


def test_risk_rolls_up_the_chain_and_counts_offline_devices(demo_city):
    g = demo_city.grids[5].id
    chain = [a.id for a in demo_city.chain(g)]
    rm = risk.compute(demo_city, [incident(demo_city, g)], [], NOW)
    assert all(rm.of(a) > 0 for a in chain)  # grid, community, street, district
    other = next(d for d in demo_city.children(None) if d != chain[-1])
    assert rm.of(other) == 0.0
    assert risk.worst_child(demo_city, rm, None) == chain[-1]
    devs = [d.id for d in demo_city.devices.values() if d.area == g]
    assert devs, "the demo city has devices in every grid used here"
    blind = risk.compute(demo_city, [], devs, NOW)
    assert blind.of(g) == pytest.approx(risk.saturate(risk.OFFLINE_WEIGHT), abs=0.1)  # the whole grid is blind
    assert 0 < blind.of(chain[-1]) < blind.of(g)  # a district is diluted by its other devices


def test_legend_covers_0_to_100_in_order():
    rows = risk.legend({"a": 5, "b": 95, "c": 96})
    assert rows[0]["range"].startswith("0-") and rows[-1]["range"].endswith("-100")
    assert [r["count"] for r in rows] == [1, 0, 0, 0, 2]
    assert [risk.bucket(s) for s in (0, 9.9, 10, 54.9, 55, 80, 100)] == [0, 0, 1, 2, 3, 4, 4]


# ---------------------------------------------------------------- geometry and map


def test_geometry_of_city_and_district(demo_city):
    city_geom = figures.geometry(demo_city, None)
    assert len(city_geom.grids) == len(demo_city.grids)
    assert set(city_geom.children) == set(demo_city.children(None))
    x0, y0, x1, y1 = city_geom.bounds
    assert (x0, y0, x1, y1) == pytest.approx(demo_city.bounds)
    assert city_geom.aspect == pytest.approx(1 / np.cos(np.radians((y0 + y1) / 2)))
    d = city_geom.children[0]
    dg = figures.geometry(demo_city, d)
    assert set(dg.grids) == set(demo_city.grids_under(d))
    assert all(demo_city.devices[i].district == d for i in dg.dev_ids)
    cache = figures.GeometryCache(demo_city, maxsize=2)
    assert cache.get(d) is cache.get(d)
    cache.get(None), cache.get(dg.children[0])
    assert len(cache._cache) == 2


def test_hull_of_an_area_without_polygon():
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.2, 0.8]])
    hull = figures.convex_hull(pts)
    assert {tuple(p) for p in hull} == {(0, 0), (1, 0), (1, 1), (0, 1)}


def test_map_is_one_trace_per_bucket_not_per_grid_and_valid_plotly(demo_city):
    grids = [g.id for g in demo_city.grids[:40]]
    incs = [incident(demo_city, g, sev, iid=f"I{k}") for k, (g, sev) in
            enumerate(zip(grids, ["Minor", "Moderate", "Severe", "Extreme"] * 10))]
    rm = risk.compute(demo_city, incs, [], NOW)
    geom = figures.geometry(demo_city, None)
    units = [{"id": "FIRE-01", "type": "fire", "state": "available", "location": [114.05, 22.55]}]
    dyn = figures.dynamic_traces(geom, rm, incs, units, frozenset(), figures.Layers(sensors=True, cameras=True))
    fig = figures.map_figure(geom, dyn)
    go.Figure(fig)  # raises on any invalid property
    assert len(fig["data"]) == 11
    assert fig["layout"]["yaxis"]["scaleanchor"] == "x"
    # every elevated grid is in exactly one bucket trace: count polygons by their None separators
    in_buckets = sum(t["x"].count(None) for t in (fig["data"][i] for i in figures.T_RISK))
    assert in_buckets == sum(1 for g in grids if risk.bucket(rm.of(g)) > 0)
    base = fig["data"][figures.T_BASE]
    assert base["x"].count(None) == len(demo_city.grids)  # every grid drawn once, in one trace
    assert fig["data"][figures.T_INCIDENTS]["customdata"] == [i.id for i in incs]
    assert fig["data"][figures.T_UNITS]["customdata"] == ["FIRE-01"]


def test_devices_aggregate_when_zoomed_out_and_show_one_by_one_when_zoomed_in(demo_city):
    geom = figures.geometry(demo_city, None)
    n_sensors = int((~geom.dev_camera).sum())
    assert n_sensors > figures.MAX_MARKERS
    far = figures.device_trace(geom, geom.bounds, False, frozenset(), True)
    assert len(far["x"]) <= figures.MAX_MARKERS
    assert sum(int(t) if t else 1 for t in far["text"]) == n_sensors  # nothing lost in aggregation
    g = demo_city.areas[demo_city.grids[0].id]
    xs, ys = zip(*g.polygon)
    box = (min(xs), min(ys), max(xs), max(ys))
    here = [d.id for d in demo_city.sensors() if box[0] <= d.location[0] <= box[2] and box[1] <= d.location[1] <= box[3]]
    near = figures.device_trace(geom, box, False, frozenset(here[:1]), True)
    assert sorted(near["customdata"]) == sorted(here)
    assert near["marker"]["color"].count("#ff3b5c") == 1  # the offline one stands out
    hidden = figures.device_trace(geom, geom.bounds, True, frozenset(), False)
    assert hidden["visible"] is False and hidden["x"] == []


def test_aggregation_bounds_markers_for_20000_points():
    rng = np.random.default_rng(1)
    xy = rng.uniform([113.8, 22.4], [114.4, 22.8], size=(20_000, 2))
    x, y, n = figures.aggregate_points(xy, (113.8, 22.4, 114.4, 22.8), max_markers=1500)
    assert len(n) <= 1500 and n.sum() == 20_000
    x, y, n = figures.aggregate_points(xy, (114.0, 22.5, 114.01, 22.51))
    assert n.sum() == ((xy[:, 0] >= 114.0) & (xy[:, 0] <= 114.01) & (xy[:, 1] >= 22.5) & (xy[:, 1] <= 22.51)).sum()


def test_view_box_follows_zoom(demo_city):
    geom = figures.geometry(demo_city, None)
    assert figures.view_box(geom, None) == geom.bounds
    assert figures.view_box(geom, {"xaxis.range[0]": 114.1, "xaxis.range[1]": 114.0,
                                   "yaxis.range[0]": 22.5, "yaxis.range[1]": 22.6}) == (114.0, 22.5, 114.1, 22.6)


def test_payload_of_a_live_update_is_small(demo_city):
    """Geometry goes once; an update carries only the dynamic traces."""
    geom = figures.geometry(demo_city, None)
    incs = [incident(demo_city, demo_city.grids[k].id, iid=f"I{k}") for k in range(20)]
    rm = risk.compute(demo_city, incs, [], NOW)
    dyn = figures.dynamic_traces(geom, rm, incs, [], frozenset(), figures.Layers())
    full = len(json.dumps(figures.map_figure(geom, dyn)))
    update = len(json.dumps(list(dyn.values())))
    assert update < full / 3


# ---------------------------------------------------------------- charts and ordering


def test_evidence_chart_marks_the_anomalous_stretch():
    fig = figures.evidence_figure("wl-0001", "m", [NOW - 120, NOW - 60, NOW], [1.0, 2.0, 4.2], NOW - 60, NOW,
                                  {"warning": 3.0, "alarm": 4.0}, [(NOW, 4.2)])
    go.Figure(fig)
    rect = fig["layout"]["shapes"][0]
    assert rect["type"] == "rect" and rect["x0"] == (NOW - 60) * 1000 and rect["x1"] == NOW * 1000
    assert {s["y0"] for s in fig["layout"]["shapes"][1:]} == {3.0, 4.0}
    assert fig["layout"]["xaxis"]["range"][0] < rect["x0"]  # context before the stretch
    assert fig["data"][1]["y"] == [4.2]


def test_rejects_chart_sorted_and_empty_state():
    fig = figures.rejects_figure({"bad_json": 3, "nan_value": 10, "unknown_device": 1})
    go.Figure(fig)
    assert fig["data"][0]["y"] == ["unknown_device", "bad_json", "nan_value"]  # largest on top
    empty = figures.rejects_figure({})
    assert empty["layout"]["annotations"][0]["text"] == "No rejected messages"


def test_queue_order_escalated_then_severity_then_age(demo_city):
    g = demo_city.grids[0].id
    a = incident(demo_city, g, "Minor", "escalated", "A", NOW - 10)
    b = incident(demo_city, g, "Extreme", "new", "B", NOW - 5)
    c = incident(demo_city, g, "Extreme", "new", "C", NOW - 50)
    d = incident(demo_city, g, "Moderate", "acknowledged", "D", NOW - 500)
    assert [i.id for i in queue_order([d, b, a, c])] == ["A", "C", "B", "D"]


def test_response_times_from_history(demo_city):
    g = demo_city.grids[0].id
    h = (HistoryEntry(NOW, "system", "raise", "new"), HistoryEntry(NOW + 90, "op", "acknowledge", "acknowledged"),
         HistoryEntry(NOW + 100, "op", "dispatch", "dispatched"), HistoryEntry(NOW + 400, "FIRE-1", "arrive", "on_scene"))
    inc = incident(demo_city, g, history=h, evidence=(Evidence("wl-0001", "water_level", NOW, 3.1),))
    assert response_times([inc, incident(demo_city, g, iid="X")]) == ([90.0], [300.0])
