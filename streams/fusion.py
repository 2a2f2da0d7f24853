"""Fusion by grid ("data collision"): findings of many sources become one warning per situation.

A situation is one event in one place: it is anchored in the grid of its first finding and
collects later findings of the same event from that grid and its neighbours. Its score is the
noisy-or of its sources' scores, so corroboration raises severity and certainty while a lone
weak signal stays a minor, possible warning. A situation is re-emitted (same id) only when it
changes materially (severity, certainty, event or a new source), and emitted with
``active=False`` once all its sources are back to normal (or silent for ``expire_s``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from citybrain.city import City
from citybrain.outage import is_outage
from citybrain.records import Evidence, Warning, message_id
from citybrain.vocab import certainty_from_sources, severity_from_score
from streams.detectors.base import Finding
from streams.events import event_of
from streams.monitor import SILENCE

MAX_SOURCES = 32  # evidence kept per situation (bounded); more sources still count
MAX_SITUATIONS = 10_000
TIMELESS = frozenset({SILENCE, "presence"})


@dataclass(slots=True)
class Situation:
    id: str
    event: str
    grid: str
    started_at: float
    sources: dict[str, Finding] = field(default_factory=dict)  # "source|detector" -> latest finding
    ended: set[str] = field(default_factory=set)
    extra_sources: int = 0
    emitted: tuple = ()

    def live(self) -> list[Finding]:
        return [f for s, f in self.sources.items() if s not in self.ended]



class GridFusion:
    """Fuses findings into :class:`~citybrain.records.Warning` records. Pure and deterministic."""

    def __init__(self, city: City, expire_s: float = 900.0) -> None:
        self.city = city
        self.expire_s = expire_s
        self.neighbours = city.neighbours
        self.open: dict[tuple[str, str], Situation] = {}  # (grid, event) -> situation
        #: (grid, event) of situations changed (or closed) since the caller last cleared it, so a
        #: checkpoint can write only those
        self.changed: set[tuple[str, str]] = set()

    def _find(self, grid: str, event: str) -> Situation | None:
        s = self.open.get((grid, event))
        if s is not None:
            return s
        for g in sorted(self.neighbours.get(grid, ())):
            s = self.open.get((g, event))
            if s is not None:
                return s
        return None

    def add(self, f: Finding, grid: str) -> list[Warning]:
        event = event_of(f)
        if event == "power_outage" or event == "device_offline":
            event = "device_offline"  # relabelled to power_outage by the count of silent sources
        s = self._find(grid, event)
        if s is None:
            if not f.active or len(self.open) >= MAX_SITUATIONS:
                return []
            sid = message_id("fusion", event, grid, f.detector, f.source, repr(f.started_at))
            s = Situation(sid, event, grid, f.started_at)
            self.open[(grid, event)] = s
        self.changed.add((s.grid, s.event))
        key = f"{f.source}|{f.detector}"
        if f.active:
            if key in s.sources or len(s.sources) < MAX_SOURCES:
                s.sources[key] = f
                s.ended.discard(key)
            else:
                s.extra_sources += 1
        elif key in s.sources:
            s.ended.add(key)
        return self._emit(s, f.t)

    def advance(self, watermark: float, last_seen: Callable[[Finding], float | None]) -> list[Warning]:
        """End evidence whose source stopped reporting ``expire_s`` ago (event time).

        An open episode is not re-reported while unchanged, so silence of the finding says
        nothing; silence of its source does (a camera that never sent "end", a sensor that died
        mid-flood). Silence and presence evidence are about silence and never expire this way.
        """
        out: list[Warning] = []
        for s in list(self.open.values()):
            gone = []
            for key, f in s.sources.items():
                if key in s.ended or f.detector in TIMELESS:
                    continue
                seen = last_seen(f)
                seen = f.t if seen is None else seen
                if watermark - seen > self.expire_s:
                    gone.append((key, seen + self.expire_s))
            if gone:
                self.changed.add((s.grid, s.event))
                s.ended.update(k for k, _ in gone)
                out += self._emit(s, max(t for _, t in gone))
        return out

    def _emit(self, s: Situation, t: float) -> list[Warning]:
        live = s.live()
        if not live:
            del self.open[(s.grid, s.event)]
            return [self._warning(s, t, list(s.sources.values()), active=False)] if s.emitted else []
        best: dict[str, float] = {}  # one device's detectors are not independent witnesses
        for f in live:
            best[f.source] = max(best.get(f.source, 0.0), f.score)
        n = len(best) + s.extra_sources
        score = 1.0
        for b in best.values():
            score *= 1.0 - min(b, 0.99)
        score = 1.0 - score
        outage = s.event == "device_offline" and is_outage(((f.source, f.started_at, f.t) for f in live), s.extra_sources)
        event = "power_outage" if outage else s.event
        key = (event, severity_from_score(score), certainty_from_sources(n, score), frozenset(best))
        if s.emitted and key[:3] == s.emitted[:3] and key[3] <= s.emitted[3]:
            return []
        s.emitted = key
        return [self._warning(s, t, live, active=True, score=score, event=event, n=n)]

    def _warning(self, s: Situation, t: float, found: list[Finding], active: bool, score: float = 0.0,
                 event: str | None = None, n: int = 0) -> Warning:
        area = self.city.areas.get(s.grid)
        loc = area.centroid if area is not None else (0.0, 0.0)
        found = sorted(found, key=lambda f: (-f.score, f.source))
        event = event or (s.emitted[0] if s.emitted else s.event)
        return Warning(
            id=s.id, event=event, grid=s.grid,
            district=self.city.district_of(s.grid) if area is not None else "",
            location=tuple(loc), t=t, started_at=s.started_at, score=round(score, 4),
            severity=severity_from_score(score) if active else "Minor",
            certainty=certainty_from_sources(n, score) if active else "Possible",
            urgency="Immediate" if score >= 0.7 else "Expected",
            detector="fusion:" + ",".join(sorted({f.detector for f in found})),
            explanation="; ".join(f"{f.source}: {f.explanation}" for f in found[:5]),
            evidence=tuple(Evidence(f.source, f.source_kind, f.t, f.value, f"{f.detector}: {f.explanation}",
                                    f.started_at) for f in found[:MAX_SOURCES]),
            active=active,
        )

    # ------------------------------------------------------------------ state

    def state(self) -> list:
        return [situation_state(s) for s in self.open.values()]

    def restore(self, items: list) -> None:
        for sid, event, grid, started, fs, ended, extra, emitted in items:
            s = Situation(sid, event, grid, started)
            for fd in fs:
                f = Finding(*fd)
                s.sources[f"{f.source}|{f.detector}"] = f
            s.ended, s.extra_sources = set(ended), extra
            s.emitted = (emitted[0], emitted[1], emitted[2], frozenset(emitted[3])) if emitted else ()
            self.open[(grid, event)] = s


def situation_state(s: Situation) -> list:
    """One item of :meth:`GridFusion.state` (what :meth:`GridFusion.restore` takes a list of)."""
    return [s.id, s.event, s.grid, s.started_at, [_finding_state(f) for f in s.sources.values()],
            sorted(s.ended), s.extra_sources, [s.emitted[0], s.emitted[1], s.emitted[2], sorted(s.emitted[3])]
            if s.emitted else []]


def _finding_state(f: Finding) -> list:
    return [f.detector, f.source, f.source_kind, f.t, f.value, f.score, f.started_at, f.explanation, f.active]
