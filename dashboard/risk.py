"""The governance risk index: one number 0-100 per grid and per area (see docs/RISK_INDEX.md).

Why one number: an operator at the video wall must see in seconds where the city hurts. The index
adds up what needs attention in a grid - open incidents weighted by severity and by how far they
are from being handled, corroborating warnings, how long they have waited past the response
targets - and the share of its devices that are offline (a blind spot is a risk too), then
saturates it to 0-100 so that one extreme incident reads "critical" and ten minor ones cannot
exceed a handful of severe ones by much. An area's index is computed the same way from the sum
of its grids' incident terms and its own offline share, so districts and grids read alike.

Pure functions over records: cheap enough to recompute every second for a 20,000-grid city
because only grids with something in them are visited.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from citybrain.city import City
from citybrain.records import Incident

SEVERITY_WEIGHT: dict[str, float] = {"Extreme": 40.0, "Severe": 24.0, "Moderate": 12.0, "Minor": 5.0, "Unknown": 5.0}
STATE_FACTOR: dict[str, float] = {"escalated": 1.5, "new": 1.2, "acknowledged": 1.0, "dispatched": 0.8, "on_scene": 0.6}
WARNING_WEIGHT = 2.0  # each corroborating warning beyond the first
WARNING_CAP = 5
ACK_TARGET_S = 300.0  # an incident should be acknowledged within 5 minutes
ACK_LATE_MAX = 15.0  # added at most for waiting twice the target
ARRIVE_TARGET_S = 600.0  # a dispatched unit should be on scene within 10 minutes
ARRIVE_LATE_MAX = 10.0
OFFLINE_WEIGHT = 20.0  # all devices of an area offline
SATURATION = 28.0  # raw 28 -> index 63; one new extreme incident (raw 48) -> 82, critical

#: (lower bound, name, colour): the legend, shared by the map, the docs and the wall
BUCKETS: tuple[tuple[float, str, str], ...] = (
    (0.0, "calm", "#21405a"),
    (10.0, "watch", "#d9c23c"),
    (30.0, "elevated", "#f08c2e"),
    (55.0, "high", "#e0452b"),
    (80.0, "critical", "#c2187a"),
)


def saturate(raw: float) -> float:
    return 100.0 * (1.0 - math.exp(-max(raw, 0.0) / SATURATION))


def bucket(score: float) -> int:
    """Index into :data:`BUCKETS` for a score."""
    k = 0
    for i, (lo, _, _) in enumerate(BUCKETS):
        if score >= lo:
            k = i
    return k


def _first(inc: Incident, state: str) -> float | None:
    return next((h.t for h in inc.history if h.state == state), None)


def incident_raw(inc: Incident, now: float) -> float:
    """What one open incident adds to its grid's raw risk."""
    w = SEVERITY_WEIGHT.get(inc.severity, 5.0) * STATE_FACTOR.get(inc.state, 0.0)
    if w == 0.0:
        return 0.0  # closed, resolved, false alarm, merged
    w += WARNING_WEIGHT * min(max(len(inc.warnings) - 1, 0), WARNING_CAP)
    if inc.state in ("new", "escalated"):
        w += ACK_LATE_MAX * min(max(now - inc.detected_at - ACK_TARGET_S, 0.0) / ACK_TARGET_S, 1.0)
    elif inc.state == "dispatched":
        sent = _first(inc, "dispatched") or inc.updated_at
        w += ARRIVE_LATE_MAX * min(max(now - sent - ARRIVE_TARGET_S, 0.0) / ARRIVE_TARGET_S, 1.0)
    return w


@dataclass(frozen=True, slots=True)
class RiskMap:
    """Scores of every grid and area with something in it (absent = 0)."""

    scores: dict[str, float]

    def of(self, area_id: str) -> float:
        return self.scores.get(area_id, 0.0)


class DeviceCounts:
    """Devices per area (every level), computed once per city: the offline share's denominator."""

    def __init__(self, city: City) -> None:
        self.city = city
        self.total: dict[str, int] = defaultdict(int)
        for d in city.devices.values():
            for a in city.chain(d.area):
                self.total[a.id] += 1


def compute(city: City, incidents: Iterable[Incident], offline: Iterable[str], now: float,
            counts: DeviceCounts | None = None) -> RiskMap:
    """The risk index of every grid and area touched by an open incident or an offline device."""
    counts = counts or DeviceCounts(city)
    raw: dict[str, float] = defaultdict(float)
    for inc in incidents:
        w = incident_raw(inc, now)
        if w and inc.area in city.areas:
            for a in city.chain(inc.area):
                raw[a.id] += w
    off: dict[str, int] = defaultdict(int)
    for dev in offline:
        d = city.devices.get(dev)
        if d is not None:
            for a in city.chain(d.area):
                off[a.id] += 1
    scores: dict[str, float] = {}
    for aid in set(raw) | set(off):
        share = off.get(aid, 0) / max(counts.total.get(aid, 0), 1)
        scores[aid] = round(saturate(raw.get(aid, 0.0) + OFFLINE_WEIGHT * share), 1)
    return RiskMap(scores)


def worst_child(city: City, risk: RiskMap, area_id: str | None) -> str | None:
    """The riskiest child of an area (``None``: of the city), or ``None`` when it has none."""
    kids = city.children(area_id)
    return max(kids, key=lambda k: (risk.of(k), k)) if kids else None


def legend(scores: Mapping[str, float] | None = None) -> list[dict]:
    """The legend rows: name, range and colour of each bucket (and how many areas are in it)."""
    rows = []
    for i, (lo, name, colour) in enumerate(BUCKETS):
        hi = BUCKETS[i + 1][0] if i + 1 < len(BUCKETS) else 100.0
        n = sum(1 for s in scores.values() if bucket(s) == i) if scores is not None else None
        rows.append({"name": name, "range": f"{lo:g}-{hi:g}", "colour": colour, "count": n})
    return rows
