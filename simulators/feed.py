"""The deterministic feed: every device of a city at its own cadence, scenarios injected.

A pure generator of :class:`Message` in event-time order, with no network and no wall clock:
the same city, seed, start and scenarios always give byte-identical messages. Publishing
(at any speed) is a separate concern (``simulators.publish``), which is why speed can never
change event times.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from citybrain.city import City
from simulators.model import CADENCE_S, DEFAULT_CADENCE_S, normal_value, rhythm
from simulators.scenarios import Scenario

SCENARIO_CADENCE_S = 5
COUNT_CADENCE_S = 60


@dataclass(frozen=True, slots=True)
class Message:
    t: float  # event time
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Faults:
    """Per-reading probabilities of the faults real devices show."""

    duplicate: float = 0.002  # the same message delivered twice
    out_of_order: float = 0.002  # delivered after the next one
    dropout: float = 0.002  # a reading never sent
    stuck: float = 0.0  # value frozen (sensor fault)
    spike: float = 0.0  # absurd value (sensor fault)

    @classmethod
    def none(cls) -> Faults:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0)


def _rng(*parts: object) -> random.Random:
    return random.Random(zlib.crc32(":".join(map(str, parts)).encode()))


def senml(device: str, kind: str, unit: str, t: float, v: float) -> bytes:
    return json.dumps([{"bn": f"{device}:", "bt": round(t, 3), "n": kind, "u": unit, "v": round(v, 3)}],
                      separators=(",", ":")).encode()


class Feed:
    def __init__(self, city: City, start: float, seed: int = 7, scenarios: list[Scenario] = (),
                 duration: float | None = None, faults: Faults | None = None, presence: bool = True) -> None:
        self.city, self.start, self.seed, self.duration = city, float(int(start)), seed, duration
        self.scenarios = list(scenarios)
        self.faults = faults or Faults()
        self.presence = presence
        self.sensors = sorted((d for d in city.sensors()), key=lambda d: d.id)
        self.cameras = sorted((d for d in city.cameras()), key=lambda d: d.id)
        self._due: dict[tuple[int, int], list] = defaultdict(list)
        for d in self.sensors:
            c = CADENCE_S.get(d.kind, DEFAULT_CADENCE_S)
            self._due[(c, _rng(seed, d.id).randrange(c))].append(d)
        self._cadences = sorted({c for c, _ in self._due})

    def truth(self) -> list[dict]:
        return [s.truth(self.start) for s in self.scenarios]

    def _active(self, off: float) -> list[Scenario]:
        return [s for s in self.scenarios if s.start <= off < s.start + s.duration]

    def _value(self, d, t: float, off: float) -> float | None:
        for s in self._active(off):
            if d.id in s.silent:
                return None
            for sig in s.signals:
                if sig.device == d.id:
                    normal = normal_value(d.kind, t, 0.0)
                    frac = min(1.0, (off - s.start + SCENARIO_CADENCE_S) / sig.ramp_s)
                    return normal + (sig.value - normal) * frac
        r = _rng(self.seed, d.id, int(t))
        v = normal_value(d.kind, t, r.gauss(0, 1))
        if self.faults.spike and r.random() < self.faults.spike:
            v *= 50
        if self.faults.stuck and r.random() < self.faults.stuck:
            v = round(normal_value(d.kind, self.start, 0.0), 1)
        return v

    def __iter__(self) -> Iterator[Message]:
        held: list[Message] = []  # delayed deliveries: released a few seconds of event time later
        for m in self._ordered():
            while held and held[0].t + 3 <= m.t:
                yield held.pop(0)
            r = _rng(self.seed, "fault", m.topic, m.t)
            if m.topic.startswith("city/sensors/"):
                if r.random() < self.faults.dropout:
                    continue
                if r.random() < self.faults.out_of_order:
                    held.append(m)
                    continue
            yield m
            if m.topic.startswith("city/sensors/") and r.random() < self.faults.duplicate:
                yield m
        yield from held

    def _ordered(self) -> Iterator[Message]:
        if self.presence:
            for d in sorted(self.city.devices.values(), key=lambda d: d.id):
                yield Message(self.start, f"city/devices/{d.id}/status", b"online", 1, True)
        off = 0
        while self.duration is None or off < self.duration:
            t = self.start + off
            active = self._active(off)
            due = [d for c in self._cadences for d in self._due.get((c, off % c), ())]
            if off % SCENARIO_CADENCE_S == 0:
                extra = {sig.device for s in active for sig in s.signals}
                due += [self.city.devices[i] for i in sorted(extra) if all(i != d.id for d in due)]
            for d in due:
                v = self._value(d, t, off)
                if v is not None:
                    yield Message(t, f"city/sensors/{d.id}", senml(d.id, d.kind, d.unit, t, v))
            for s in self.scenarios:
                if off == s.start:
                    for dev in s.offline:
                        yield Message(t, f"city/devices/{dev}/status", b"offline", 1, True)
                if off == s.start + s.duration:
                    for dev in s.offline:
                        yield Message(t, f"city/devices/{dev}/status", b"online", 1, True)
                yield from self._camera_events(s, off, t)
            if off % COUNT_CADENCE_S == 0:
                yield from self._counts(t, active)
            off += 1

    def _camera_events(self, s: Scenario, off: float, t: float) -> Iterator[Message]:
        rel = off - s.start
        end = min(s.duration, 120.0)
        for c in s.cameras:
            oid = f"{int(self.start + s.start)}.{zlib.crc32(c.camera.encode()) % 1000000:06d}-{c.label}"
            after = {"id": oid, "camera": c.camera, "label": c.label, "score": c.score, "top_score": c.score,
                     "start_time": self.start + s.start, "end_time": None, "current_zones":
                     list(self.city.devices[c.camera].zones[:1]), "box": [100, 120, 260, 300], "frame_time": t}
            if rel == 0:
                kind = "new"
            elif rel == end:
                kind = "end"
                after["end_time"] = t
            elif 0 < rel < end and rel % 5 == 0:
                kind = "update"
            else:
                continue
            yield Message(t, f"city/cameras/{c.camera}/events",
                          json.dumps({"type": kind, "before": {}, "after": after}, separators=(",", ":")).encode())

    def _counts(self, t: float, active: list[Scenario]) -> Iterator[Message]:
        override = {(cam, label): n for s in active for cam, label, n in s.counts}
        level = rhythm("traffic", t)
        for c in self.cameras:
            r = _rng(self.seed, c.id, int(t))
            for label, base in (("person", 25), ("car", 15)):
                n = override.get((c.id, label), max(0, int(base * level + r.gauss(0, 2))))
                yield Message(t, f"city/cameras/{c.id}/{label}", str(n).encode(), 0, False)
