"""Scenarios with ground truth: what happens, where, when, and which devices show it.

Each scenario picks its place from the city (the first grid, in a stable order, with the
devices it needs nearby), so any city file works and the same seed gives the same truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from citybrain.city import City, Device


@dataclass(frozen=True, slots=True)
class Signal:
    device: str
    kind: str
    value: float  # the value the device reports during the scenario (ramped in over ramp_s)
    ramp_s: float = 30.0


@dataclass(frozen=True, slots=True)
class CameraSignal:
    camera: str
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    event: str
    grid: str
    district: str
    start: float  # offset from the feed start, seconds of event time
    duration: float
    signals: tuple[Signal, ...] = ()
    cameras: tuple[CameraSignal, ...] = ()
    silent: tuple[str, ...] = ()  # devices that stop reporting
    offline: tuple[str, ...] = ()  # devices that announce offline presence
    counts: tuple[tuple[str, str, int], ...] = ()  # (camera, label, count) during the scenario

    def truth(self, t0: float) -> dict:
        devices = [s.device for s in self.signals] + [c.camera for c in self.cameras] + list(self.silent) + list(self.offline) + \
            [c for c, _, _ in self.counts]
        return {"scenario": self.name, "event": self.event, "grid": self.grid, "district": self.district,
                "start": t0 + self.start, "end": t0 + self.start + self.duration, "devices": sorted(set(devices))}


@dataclass
class _Finder:
    city: City
    used: set[str] = field(default_factory=set)

    def near(self, grid: str, kind: str) -> Device | None:
        near = [grid] + sorted(self.city.neighbours.get(grid, ()))
        for g in near:
            for d in sorted(self.city.devices.values(), key=lambda d: d.id):
                if d.area == g and d.kind == kind and d.id not in self.used:
                    return d
        return None

    def grid_with(self, *kinds: str, skip: int = 0) -> tuple[str, list[Device]] | None:
        found = 0
        for g in sorted(a.id for a in self.city.grids):
            devs = [self.near(g, k) for k in kinds]
            if all(devs):
                if found == skip:
                    self.used.update(d.id for d in devs)
                    return g, devs  # type: ignore[return-value]
                found += 1
        return None


def _alarm(d: Device, factor: float, default: float) -> float:
    a = d.limit("alarm")
    return a * factor if a is not None else default


def build(city: City, name: str, start: float, duration: float = 600.0, finder: _Finder | None = None) -> Scenario | None:
    """One scenario of the catalogue placed in ``city`` (None when the city lacks the devices)."""
    f = finder or _Finder(city)

    def mk(event, kinds, signals_fn, **kw):
        hit = f.grid_with(*kinds)
        if hit is None:
            return None
        grid, devs = hit
        return Scenario(name, event, grid, city.district_of(grid), start, duration, **signals_fn(devs), **kw)

    if name == "flood":
        return mk("flood", ("water_level", "rainfall"), lambda d: {"signals": (
            Signal(d[0].id, "water_level", _alarm(d[0], 1.15, 4.6), 20), Signal(d[1].id, "rainfall", _alarm(d[1], 1.3, 80), 10))})
    if name == "fire":
        return mk("fire", ("smoke", "temperature", "camera"), lambda d: {
            "signals": (Signal(d[0].id, "smoke", _alarm(d[0], 1.5, 450), 10), Signal(d[1].id, "temperature", _alarm(d[1], 1.1, 99), 20)),
            "cameras": (CameraSignal(d[2].id, "fire", 0.92),)})
    if name == "gas_leak":
        return mk("gas_leak", ("gas",), lambda d: {"signals": (Signal(d[0].id, "gas", _alarm(d[0], 1.4, 35), 10),)})
    if name == "air_pollution":
        return mk("air_pollution", ("pm25",), lambda d: {"signals": (Signal(d[0].id, "pm25", _alarm(d[0], 1.4, 210), 60),)})
    if name == "accident":
        return mk("accident", ("camera", "traffic_speed"), lambda d: {
            "cameras": (CameraSignal(d[0].id, "accident", 0.9),), "signals": (Signal(d[1].id, "traffic_speed", 5.0, 30),)})
    if name == "traffic_jam":
        return mk("traffic_jam", ("traffic_speed", "occupancy"), lambda d: {
            "signals": (Signal(d[0].id, "traffic_speed", 4.0, 120), Signal(d[1].id, "occupancy", 95.0, 120))})
    if name == "crowd_surge":
        return mk("crowd_surge", ("camera",), lambda d: {"counts": ((d[0].id, "person", 400),)})
    if name == "intrusion":
        return mk("intrusion", ("camera",), lambda d: {"cameras": (CameraSignal(d[0].id, "intrusion", 0.88),)})
    if name == "power_outage":
        hit = f.grid_with("power")
        if hit is None:
            return None
        grid = hit[0]
        near = {grid} | set(city.neighbours.get(grid, ()))
        silent = tuple(sorted(d.id for d in city.devices.values() if d.area in near and not d.is_camera))[:12]
        return Scenario(name, "power_outage", grid, city.district_of(grid), start, duration, silent=silent,
                        signals=(Signal(hit[1][0].id, "power", 0.0, 5),))
    if name == "device_offline":
        hit = f.grid_with("noise")
        if hit is None:
            return None
        grid, devs = hit
        return Scenario(name, "device_offline", grid, city.district_of(grid), start, duration, offline=(devs[0].id,),
                        silent=(devs[0].id,))
    raise ValueError(f"unknown scenario {name!r}")


CATALOGUE = ("flood", "fire", "gas_leak", "air_pollution", "accident", "traffic_jam", "crowd_surge", "intrusion",
             "power_outage", "device_offline")
#: scenarios found by silence, which is judged against each device's own cadence: alone, they
#: start once the devices have reported a few times (at 30 s no rhythm is known, nothing is found)
NEEDS_RHYTHM = frozenset({"power_outage", "device_offline"})
SUITES = {
    "demo": (("flood", 15.0), ("fire", 45.0)),
    "quiet": (),
    "all": tuple((n, 60.0 + 900.0 * k) for k, n in enumerate(CATALOGUE)),
    "suite": tuple((n, 30.0 + 300.0 * k) for k, n in enumerate(CATALOGUE)),  # compact, for tests
    **{n: ((n, 300.0 if n in NEEDS_RHYTHM else 30.0),) for n in CATALOGUE},
}


def suite(city: City, name: str, duration: float = 600.0) -> list[Scenario]:
    if name not in SUITES:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(sorted(SUITES))}")
    f = _Finder(city)
    out = []
    for n, start in SUITES[name]:
        s = build(city, n, start, duration, f)
        if s is not None:
            out.append(s)
    return out
