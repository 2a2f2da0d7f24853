"""Generate city files: the bundled Shenzhen-like demo city and bigger ones for benchmarks.

    python -m citybrain.citygen --out citybrain/data/demo_city.json          # the demo city
    python -m citybrain.citygen --grids 20000 --devices 20000 --out big.json

Districts sit on their real Shenzhen coordinates (rectangles approximating each district);
each is split into streets, communities and grids. The same arguments give the same file.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

#: (id, name, lon0, lat0, lon1, lat1) - rough bounding rectangles of Shenzhen districts
DISTRICTS = (
    ("NS", "Nanshan", 113.88, 22.48, 114.00, 22.60),
    ("FT", "Futian", 114.00, 22.50, 114.10, 22.58),
    ("LH", "Luohu", 114.10, 22.53, 114.20, 22.61),
    ("BA", "Bao'an", 113.80, 22.60, 113.92, 22.72),
    ("LHU", "Longhua", 113.98, 22.60, 114.10, 22.72),
    ("LG", "Longgang", 114.20, 22.60, 114.34, 22.74),
)
STREET_NAMES = {
    "FT": ("Lianhua", "Huafu", "Futian", "Shatou"),
    "NS": ("Nantou", "Shekou", "Yuehai", "Taoyuan"),
    "LH": ("Guiyuan", "Dongmen", "Cuizhu", "Huangbei"),
    "BA": ("Xin'an", "Xixiang", "Hangcheng", "Fuyong"),
    "LHU": ("Minzhi", "Longhua", "Dalang", "Guanlan"),
    "LG": ("Buji", "Bantian", "Nanwan", "Henggang"),
}
#: sensor kind -> (id prefix, share of sensors, limits or None)
SENSOR_MIX = {
    "water_level": ("wl", 0.10, {"warning": 3.0, "alarm": 4.0}),
    "rainfall": ("rf", 0.05, {"warning": 30.0, "alarm": 60.0}),
    "pm25": ("aq", 0.125, {"warning": 75.0, "alarm": 150.0}),
    "noise": ("nz", 0.10, {"warning": 85.0, "alarm": 100.0}),
    "temperature": ("tp", 0.10, {"warning": 60.0, "alarm": 90.0}),
    "smoke": ("sm", 0.125, {"warning": 100.0, "alarm": 300.0}),
    "gas": ("gs", 0.075, {"warning": 10.0, "alarm": 25.0}),
    "traffic_speed": ("ts", 0.10, None),
    "traffic_flow": ("tf", 0.075, None),
    "occupancy": ("oc", 0.05, None),
    "power": ("pw", 0.075, None),
    "vibration": ("vb", 0.025, {"warning": 20.0, "alarm": 50.0}),
}
UNITS = {"fire": 12, "police": 14, "medical": 12, "rescue": 8, "utility": 8, "grid_worker": 10}
ZONES = ("crossing", "gate", "plaza", "road", "entrance", "station")


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    r = lambda v: round(v, 6)  # noqa: E731
    return [[r(x0), r(y0)], [r(x1), r(y0)], [r(x1), r(y1)], [r(x0), r(y1)]]


def make_city(grids: int = 384, sensors: int = 2000, cameras: int = 300, units: int | None = None,
              seed: int = 2026, name: str = "Shenzhen Demo City") -> dict:
    """Build a city dict of the contract's shape with about ``grids`` grids."""
    rng = random.Random(seed)
    streets_per, communities_per = 4, 4
    grids_per = max(1, math.ceil(grids / (len(DISTRICTS) * streets_per * communities_per)))
    areas: list[dict] = []
    grid_boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    for did, dname, *box in DISTRICTS:
        areas.append({"id": did, "name": dname, "level": "district", "parent": None, "polygon": _rect(*box)})
        for s, sbox in enumerate(_exact(box, streets_per)):
            sid = f"{did}-S{s + 1:02d}"
            sname = STREET_NAMES[did][s] if s < len(STREET_NAMES[did]) else f"{dname} Street {s + 1}"
            areas.append({"id": sid, "name": f"{sname} Street", "level": "street", "parent": did, "polygon": _rect(*sbox)})
            for c, cbox in enumerate(_exact(sbox, communities_per)):
                cid = f"{sid}-C{c + 1:02d}"
                areas.append({"id": cid, "name": f"{sname} Community {c + 1}", "level": "community", "parent": sid,
                              "polygon": _rect(*cbox)})
                for g, gbox in enumerate(_exact(cbox, grids_per)):
                    gid = f"{cid}-G{g + 1:03d}"
                    areas.append({"id": gid, "name": f"Grid {gid}", "level": "grid", "parent": cid, "polygon": _rect(*gbox)})
                    grid_boxes.append((gid, gbox))
    devices: list[dict] = []
    for kind, (prefix, share, limits) in SENSOR_MIX.items():
        n = max(1, round(sensors * share))
        for k in range(n):
            _, box = rng.choice(grid_boxes)
            d = {"id": f"{prefix}-{k + 1:05d}", "kind": kind, "unit": _unit(kind), "location": _inside(rng, box)}
            if limits:
                d["limits"] = dict(limits)
            devices.append(d)
    for k in range(cameras):
        _, box = rng.choice(grid_boxes)
        devices.append({"id": f"cam-{k + 1:05d}", "kind": "camera", "location": _inside(rng, box),
                        "zones": rng.sample(ZONES, 2)})
    unit_list: list[dict] = []
    counts = UNITS if units is None else {t: max(1, round(units * c / sum(UNITS.values()))) for t, c in UNITS.items()}
    for typ, n in counts.items():
        for k in range(n):
            _, box = rng.choice(grid_boxes)
            unit_list.append({"id": f"{typ.upper().replace('_', '')}-{k + 1:02d}", "type": typ, "base": _inside(rng, box)})
    return {"name": name, "timezone": "Asia/Shanghai", "areas": areas, "devices": devices, "units": unit_list}


def _exact(box, n):
    """Split into exactly n cells: the grid that best fits, trimmed to n (row-major)."""
    x0, y0, x1, y1 = box
    cols = max(1, round(math.sqrt(n * (x1 - x0) / (y1 - y0))))
    rows = math.ceil(n / cols)
    dx, dy = (x1 - x0) / cols, (y1 - y0) / rows
    cells = []
    for r in range(rows):
        for c in range(cols):
            if len(cells) < n:
                cells.append((x0 + c * dx, y0 + r * dy, x0 + (c + 1) * dx, y0 + (r + 1) * dy))
    return cells


def _inside(rng: random.Random, box) -> list[float]:
    x0, y0, x1, y1 = box
    return [round(rng.uniform(x0 + 0.15 * (x1 - x0), x1 - 0.15 * (x1 - x0)), 6),
            round(rng.uniform(y0 + 0.15 * (y1 - y0), y1 - 0.15 * (y1 - y0)), 6)]


def _unit(kind: str) -> str:
    from citybrain.vocab import SENSOR_KINDS

    return SENSOR_KINDS[kind].unit


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grids", type=int, default=384)
    ap.add_argument("--devices", type=int, default=2000, help="number of sensors")
    ap.add_argument("--cameras", type=int, default=300)
    ap.add_argument("--units", type=int, default=None)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    city = make_city(a.grids, a.devices, a.cameras, a.units, a.seed)
    a.out.write_text(json.dumps(city, separators=(",", ":")))
    print(f"wrote {a.out}: {sum(1 for x in city['areas'] if x['level'] == 'grid')} grids, "
          f"{len(city['devices'])} devices, {len(city['units'])} units")


if __name__ == "__main__":
    main()
