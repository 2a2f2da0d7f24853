"""City loading at scale: a 20,000-grid, 20,000-device city, against a naive loop baseline.

    python bench/bench_city.py [--grids 20000] [--devices 20000]

Prints load time, device placement time (vectorised) and the same placement done naively
(every device against every grid's bounding box, then ray casting) on a sample, as a ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from citybrain import geo
from citybrain.city import load_city
from citybrain.citygen import make_city


def naive_assign(px, py, polys):
    out = []
    for x, y in zip(px, py):
        hit = -1
        for i, p in enumerate(polys):
            if p[:, 0].min() <= x <= p[:, 0].max() and p[:, 1].min() <= y <= p[:, 1].max():
                if geo.points_in_polygon(np.array([x]), np.array([y]), p)[0]:
                    hit = i
                    break
        out.append(hit)
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grids", type=int, default=20000)
    ap.add_argument("--devices", type=int, default=20000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "big.json"
        raw = make_city(grids=a.grids, sensors=a.devices, cameras=a.devices // 10)
        p.write_text(json.dumps(raw))
        t = time.perf_counter()
        city = load_city(p)
        load_s = time.perf_counter() - t
    ids, polys = city._grid_polys
    locs = np.array([d.location for d in city.devices.values()])
    t = time.perf_counter()
    idx = geo.assign_points(locs[:, 0], locs[:, 1], polys)
    vec_s = time.perf_counter() - t
    sample = 200
    t = time.perf_counter()
    naive = naive_assign(locs[:sample, 0], locs[:sample, 1], polys)
    naive_s = (time.perf_counter() - t) * len(locs) / sample
    assert (naive == idx[:sample]).all()
    t = time.perf_counter()
    _ = city.neighbours
    nb_s = time.perf_counter() - t
    print(f"city: {len(city.grids)} grids, {len(city.devices)} devices")
    print(f"load_city (parse + validate + place): {load_s:.2f} s")
    print(f"placement vectorised: {vec_s * 1000:.0f} ms; naive (extrapolated from {sample}): {naive_s:.1f} s; "
          f"speed-up x{naive_s / vec_s:.0f}")
    print(f"grid neighbours: {nb_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
