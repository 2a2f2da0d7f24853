"""Level shifts, drifts and false alarms of the sensor monitor on synthetic city sensors.

    python bench/bench_change.py [--code DIR ...] [--quick]

Why: the stream's monitors (not NAB mode) must find a sustained shift of a couple of spreads, or
a drift, that no single reading shows, and stay quiet on what real sensors do every day: a daily
cycle, weekends, office-hours steps, smooth low-noise curves (temperature, water level),
heavy-tailed noise. Each case runs ``streams.monitor.sensor_monitor`` (what the stream core builds
for a sensor) over one series; ``--code`` runs the same cases on other checkouts (e.g. a ``git
worktree`` of an older commit) in the same run, for a ratio on the same machine and draws.

Figures: for a change, the minutes from its start to the first active ``change`` or ``baseline``
finding (``-``: not found within 12 hours); for a clean series, the number of episodes
(distinct detector and start) of ``change`` and of ``baseline`` after the learning period (day 8:
one week and a day; for the 1 s sensor, from its first reading at 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_795_305_600.0 - (1_795_305_600.0 % 86400)  # midnight UTC; "weekend" below is days 5 and 6
DAY_S = 86400.0
LEARNED = 8 * DAY_S
FIND_WITHIN_S = 12 * 3600.0  # a change found later than this counts as missed


def city_sensor(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise 1, a daily cycle of 5 and weekends 3 lower (in units of the noise)."""
    d = (t - T0) / DAY_S
    return 40 + 5 * np.sin(2 * np.pi * d) - 3.0 * ((d // 1) % 7 >= 5) + rng.normal(0, 1, t.size)


def smooth(sd: float, quantum: float = 0.0):
    def f(t, rng):
        x = 25 + 5 * np.sin(2 * np.pi * (t - T0) / DAY_S - 2) + (rng.normal(0, sd, t.size) if sd else 0.0)
        return np.round(x / quantum) * quantum if quantum else x
    return f


def office_step(k: float):
    def f(t, rng):
        h = ((t - T0) % DAY_S) / 3600
        d = (t - T0) // DAY_S
        return 40 + k * ((h >= 9) & (h < 18)) - 3 * (d % 7 >= 5) + rng.normal(0, 1, t.size)
    return f


def lognormal(t, rng):
    return 40 * (1 + 0.3 * np.sin(2 * np.pi * (t - T0) / DAY_S)) * rng.lognormal(0, 0.4, t.size)


def shift(size: float, at: float):
    return lambda t: np.where(t >= T0 + at, size, 0.0)


def spike(size: float, at: float, seconds: float = 150.0):
    return lambda t: np.where((t >= T0 + at) & (t < T0 + at + seconds), size, 0.0)


def drift(per_hour: float, at: float):
    return lambda t: np.clip((t - T0 - at) / 3600 * per_hour, 0, None)


def cases(quick: bool) -> list[dict]:
    """(name, cadence s, days, series, change or None, change start s)."""
    out = []
    # (cadence, days, reporting every 5 minutes until): a sensor that reports every second is
    # given a first week at 5 minutes (a week of 1 Hz readings would take the scalar monitor minutes)
    cadences = [(60.0, 12.0, 0.0), (30.0, 12.0, 0.0), (10.0, 10.0, 0.0), (1.0, 9.0, 7.6)]
    if quick:
        cadences = [(30.0, 12.0, 0.0), (1.0, 9.0, 7.6)]
    for every, days, sparse in cadences:
        at = (days - 1.0) * DAY_S if sparse else (days - 1.7) * DAY_S
        for name, ch in (("2-spread shift", ("shift", 2.0)), ("1-spread shift", ("shift", 1.0)),
                         ("drift 1 spread/h", ("drift", 1.0)), ("9-spread spike, 150 s", ("spike", 9.0)),
                         ("clean", None)):
            out.append({"name": f"city sensor, {name}", "every": every, "days": days, "series": "city",
                        "change": ch, "at": at, "sparse": sparse * DAY_S})
    for label, sd, q, every in (("temperature, noise 0.1", 0.1, 0.0, 30.0), ("temperature, 0.1 steps", 0.0, 0.1, 30.0),
                                ("temperature, noise 0.05", 0.05, 0.0, 10.0), ("temperature, noise 0.2", 0.2, 0.0, 300.0)):
        out.append({"name": label, "every": every, "days": 14.0, "series": ["smooth", sd, q], "change": None, "at": 0})
    for k in (3.0, 5.0, 20.0):
        out.append({"name": f"office-hours step of {k:g}", "every": 30.0, "days": 15.0, "series": ["step", k],
                    "change": None, "at": 0})
    out.append({"name": "lognormal noise, daily cycle", "every": 60.0, "days": 14.0, "series": "lognormal",
                "change": None, "at": 0})
    out.append({"name": "simulated traffic_flow, rush-hour level at 3 a.m. (10 min)", "every": 30.0, "days": 12.0,
                "series": ["sim", "traffic_flow"], "change": ("set", 1600.0), "at": 10 * DAY_S + 19 * 3600})
    for kind, every in (("traffic_flow", 30.0), ("occupancy", 30.0), ("traffic_speed", 30.0), ("noise", 60.0),
                        ("temperature", 60.0), ("power", 60.0)):  # the simulator's normal city
        out.append({"name": f"simulated {kind}", "every": every, "days": 12.0, "series": ["sim", kind],
                    "change": None, "at": 0})
    return out


def simulated(kind: str):
    def f(t, rng):
        from simulators.model import normal_value

        return np.array([normal_value(kind, ti, ni) for ti, ni in zip(t.tolist(), rng.standard_normal(t.size).tolist())])
    return f


def series(s):
    """The generator a case names: "city", "lognormal", or [name, *arguments]."""
    if isinstance(s, str):
        return {"city": city_sensor, "lognormal": lognormal}[s]
    return {"smooth": smooth, "step": office_step, "sim": simulated}[s[0]](*s[1:])


def run_case(c: dict) -> dict:
    """One case on the checkout this process imports ``streams`` from."""
    from streams.monitor import sensor_monitor

    rng = np.random.default_rng(7)
    sparse = c.get("sparse", 0.0)
    t = np.concatenate((T0 + np.arange(0.0, sparse, 300.0), T0 + np.arange(sparse, c["days"] * DAY_S, c["every"])))
    s = c["series"]
    x = series(s)(t, rng)
    if c["change"]:
        kind, size = c["change"]
        if kind == "set":  # the value itself, for 10 minutes
            on = (t >= T0 + c["at"]) & (t < T0 + c["at"] + 600)
            x = np.where(on, size, x)
        else:
            x = x + {"shift": shift, "drift": drift, "spike": spike}[kind](size, c["at"])(t)
    out: list = []
    kind, utc = (s[1], 8 * 3600.0) if s[0] == "sim" else ("bench_kind", 0.0)  # the simulator's city is UTC+8
    sensor_monitor("dev-1", kind, {}, utc).step_many(t, x, out)
    active = [f for f in out if f.active and f.detector in ("change", "baseline")]
    if c["change"]:
        after = [f for f in active if T0 + c["at"] <= f.t <= T0 + c["at"] + FIND_WITHIN_S]
        return {"found_min": round((after[0].t - T0 - c["at"]) / 60) if after else None,
                "by": after[0].detector if after else None}
    eps = {(f.detector, f.started_at) for f in active if f.started_at >= T0 + max(LEARNED, c.get("sparse", 0.0))}
    return {"change": sum(d == "change" for d, _ in eps), "baseline": sum(d == "baseline" for d, _ in eps)}


def run_on(code: Path, quick: bool) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    p = subprocess.run([sys.executable, __file__, "--worker", "--quick" if quick else "--full"], env=env, cwd=code,
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def cell(r: dict) -> str:
    if "found_min" in r:
        return "-" if r["found_min"] is None else f"{r['found_min']} min ({r['by']})"
    return f"change {r['change']}, baseline {r['baseline']}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", type=Path, action="append", help="checkout to run (repeatable; default: this one)")
    ap.add_argument("--quick", action="store_true", help="two cadences instead of four")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps([run_case(c) for c in cases(a.quick)]))
        return
    codes = a.code or [ROOT]
    results = [run_on(c, a.quick) for c in codes]
    print("| case | every | " + " | ".join(str(c) for c in codes) + " |")
    print("|---|---|" + "---|" * len(codes))
    for i, c in enumerate(cases(a.quick)):
        print(f"| {c['name']} | {c['every']:g} s | " + " | ".join(cell(r[i]) for r in results) + " |")


if __name__ == "__main__":
    main()
