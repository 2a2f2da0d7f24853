"""Screen refresh cost at city scale: server time and payload per live update.

    python bench/bench_screen.py [--city /tmp/big.json] [--incidents 200] [--updates 30]

A 20,000-grid, 20,000-device city (generated with ``python -m citybrain.citygen --grids 20000
--devices 20000`` when the file is missing) with open incidents raised through the real incident
service. The screen's refresh callback is driven over HTTP exactly as the browser drives it
(``POST /_dash-update-component`` with the ``sync`` store carried from answer to answer), for:
the first draw of the city, quiet ticks (nothing changed), ticks after a change (a new incident
and a unit moving), a zoom into a district with every layer on, and the drill into a district.
The baseline, in the same run, is the naive screen: redraw the whole figure every second (every
grid polygon in its colour bucket, every device as its own marker) with ``go.Figure``.
Targets: <= 150 ms server time and <= 500 KB per update.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from citybrain.city import City, load_city
from citybrain.records import Evidence, Warning
from citybrain.settings import Settings
from citybrain.vocab import EVENTS, severity_from_score
from dashboard import figures, risk
from dashboard.callbacks import callback_request
from dashboard.server import create_app

TARGET_MS, TARGET_KB = 150.0, 500.0


def make_warning(city: City, k: int, t: float) -> Warning:
    grid = city.grids[(k * 7919) % len(city.grids)]
    dev = next((d for d in city.devices.values() if d.area == grid.id), None)
    score = 0.35 + (k % 13) / 20.0
    ev = (Evidence(dev.id, dev.kind, t - 60, 1.0 + k % 5),) if dev else ()
    return Warning(id=f"bench-{k}", event=EVENTS[k % 8], grid=grid.id, district=city.district_of(grid.id),
                   location=grid.centroid, t=t, started_at=t - 120, score=min(score, 0.99),
                   severity=severity_from_score(score), certainty="Likely", urgency="Immediate",
                   detector="bench", explanation="bench load", evidence=ev)


def build_service(settings: Settings, city: City, n: int) -> Any:
    from alerts.api import IncidentService

    svc = IncidentService(settings, city)
    now = time.time()
    for k in range(n):
        svc.handle_warning(make_warning(city, k, now - 600 + k))
    return svc


class Screen:
    """A logged-in browser's view of the refresh callback, over the app's HTTP interface."""

    def __init__(self, app: Any, admin_token: str) -> None:
        self.client = app.server.test_client()
        r = self.client.post("/login", data={"username": "admin", "password": admin_token})
        assert r.status_code == 302, r.status_code
        self.deps = self.client.get("/_dash-dependencies").get_json()
        self.sync: dict = {}
        self.n = 0

    def update(self, changed: str, area: str | None = None, layers: list[str] | None = None,
               relayout: dict | None = None) -> tuple[float, int]:
        """One refresh: (server milliseconds, response bytes)."""
        self.n += 1
        values = {"tick.n_intervals": self.n, "area.data": area,
                  "layers.value": layers or ["incidents", "units"], "map.relayoutData": relayout,
                  "selected.data": None, "sync.data": self.sync}
        body = callback_request(self.deps, "map.figure", values, changed)
        t = time.perf_counter()
        r = self.client.post("/_dash-update-component", json=body)
        ms = (time.perf_counter() - t) * 1000
        if r.status_code == 200:
            self.sync = r.get_json()["response"]["sync"]["data"]
        elif r.status_code != 204:
            raise RuntimeError(f"refresh failed: {r.status_code} {r.data[:300]!r}")
        return ms, len(r.data)


def naive_update(city: City, svc: Any, offline: frozenset[str]) -> tuple[float, int]:
    """The baseline: the whole map rebuilt and sent, every grid and every device, every second."""
    t = time.perf_counter()
    incidents = svc.list_incidents("open")
    units = svc.units()
    rm = risk.compute(city, incidents, offline, time.time())
    buckets: list[tuple[list, list]] = [([], []) for _ in risk.BUCKETS]
    for g in city.grids:
        xs, ys = zip(*g.polygon)
        b = buckets[risk.bucket(rm.of(g.id))]
        b[0].extend([*xs, xs[0], None])
        b[1].extend([*ys, ys[0], None])
    fig = go.Figure()
    for (xs, ys), (_, name, colour) in zip(buckets, risk.BUCKETS):
        fig.add_trace(go.Scatter(x=xs, y=ys, fill="toself", fillcolor=colour, mode="lines", name=name))
    devs = list(city.devices.values())
    fig.add_trace(go.Scattergl(x=[d.location[0] for d in devs], y=[d.location[1] for d in devs], mode="markers",
                               text=[d.id for d in devs]))
    fig.add_trace(go.Scatter(**{k: v for k, v in figures.unit_trace(units).items() if k != "type"}))
    fig.add_trace(go.Scatter(**{k: v for k, v in figures.incident_trace(incidents).items() if k != "type"}))
    fig.update_yaxes(scaleanchor="x")
    payload = fig.to_json()
    return (time.perf_counter() - t) * 1000, len(payload)


def summary(name: str, samples: list[tuple[float, int]]) -> str:
    ms = [s[0] for s in samples]
    kb = [s[1] / 1024 for s in samples]
    p95 = sorted(ms)[max(int(len(ms) * 0.95) - 1, 0)]
    ok = "yes" if p95 <= TARGET_MS and max(kb) <= TARGET_KB else "no"
    return (f"| {name} | {len(samples)} | {statistics.median(ms):.1f} | {p95:.1f} | {statistics.median(kb):.1f} | "
            f"{max(kb):.1f} | {ok} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--city", type=Path, default=Path(tempfile.gettempdir()) / "citybrain-bench-20k.json")
    ap.add_argument("--incidents", type=int, default=200)
    ap.add_argument("--updates", type=int, default=30)
    a = ap.parse_args()
    if not a.city.exists():
        subprocess.run([sys.executable, "-m", "citybrain.citygen", "--grids", "20000", "--devices", "20000",
                        "--out", str(a.city)], check=True)
    t = time.perf_counter()
    city = load_city(a.city)
    print(f"city: {len(city.grids)} grids, {len(city.devices)} devices, {len(city.units)} units "
          f"(loaded in {time.perf_counter() - t:.1f} s)")
    with tempfile.TemporaryDirectory() as d:
        settings = Settings().replace(data_dir=Path(d), admin_token="bench-admin")
        svc = build_service(settings, city, a.incidents)
        app = create_app(settings, city, svc)
        t = time.perf_counter()
        app.citybrain.geoms.get(None)  # what the server does once at start-up, in the background
        print(f"city geometry cached in {(time.perf_counter() - t) * 1000:.0f} ms (once, at start-up)")
        screen = Screen(app, "bench-admin")
        rows = []
        first = [screen.update("tick.n_intervals")]
        rows.append(summary("first draw of the city (geometry, once)", first))
        time.sleep(0.5)
        quiet = []
        for _ in range(a.updates):
            time.sleep(0.45)  # past the snapshot cache, as a 1 s poll would be
            quiet.append(screen.update("tick.n_intervals"))
        rows.append(summary("tick, nothing changed", quiet))
        changed = []
        for k in range(a.updates):
            svc.handle_warning(make_warning(city, a.incidents + k, time.time()))
            time.sleep(0.45)
            changed.append(screen.update("tick.n_intervals"))
        rows.append(summary("tick after a new incident", changed))
        district = sorted(city.children(None))[0]
        x0, y0, x1, y1 = figures.geometry(city, district).bounds
        zoom = [screen.update("map.relayoutData", layers=["incidents", "units", "sensors", "cameras"],
                              relayout={"xaxis.range[0]": x0, "xaxis.range[1]": x1,
                                        "yaxis.range[0]": y0, "yaxis.range[1]": y1}) for _ in range(5)]
        rows.append(summary("zoom with sensors+cameras on (aggregated)", zoom))
        drill = [screen.update("area.data", area=district)]
        rows.append(summary(f"drill into district {district} (its geometry, once)", drill))
        offline = app.citybrain.data.snapshot().offline
        naive = [naive_update(city, svc, offline) for _ in range(5)]
        rows.append(summary("naive full redraw (baseline)", naive))
    print(f"\ntargets: <= {TARGET_MS:.0f} ms (p95) and <= {TARGET_KB:.0f} KB per update\n")
    print("| update | n | median ms | p95 ms | median KB | max KB | within target |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
