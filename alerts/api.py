"""The incident service facade: the one way to create and change incidents.

Both the incident service process (warnings and unit reports from Kafka, timers) and the
command center (operators' actions) go through :class:`IncidentService`, so every change is
validated by the lifecycle, written in one transaction with its audit entry, and published
(incident JSON on ``city/alerts/{id}``, CAP to units on ``city/units/{unit}/dispatch``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from alerts import audit, cap, dispatch
from alerts.lifecycle import OPERATOR_ACTIONS, next_state
from alerts.store import Cursor, Store, dumps
from citybrain.city import City
from citybrain.clock import Clock, WallClock
from citybrain.exceptions import IllegalTransition, NotFound
from citybrain.outage import OFFLINE_EVENTS, OUTAGE_SOURCES, silent_at_once
from citybrain.records import HistoryEntry, Incident, UnitStatus, Warning
from citybrain.settings import Settings
from citybrain.vocab import (
    CAP_CERTAINTY,
    CAP_SEVERITY,
    CAP_URGENCY,
    EVENT_CAP_CATEGORY,
    EVENTS,
    OPEN_STATES,
    certainty_from_sources,
    severity_from_score,
)

log = logging.getLogger(__name__)

#: seconds without acknowledgement before an incident escalates, per severity
ESCALATE_AFTER_S = {"Extreme": 60.0, "Severe": 120.0, "Moderate": 300.0, "Minor": 900.0, "Unknown": 900.0}
REMIND_EVERY_S = 60.0
MERGE_WINDOW_S = 3600.0  # warnings within this much event time of an open incident join it
MINOR_MIN_REPEATS = 2  # a lone Minor warning must repeat before it becomes an incident
MAX_EVIDENCE = 50
FLAP_LIMIT = 3  # this many incidents of one event in one grid ended within an hour: flapping
#: what a malformed record raises: it is skipped (and counted) rather than stopping the service
BAD_RECORD = (ValueError, KeyError, TypeError)
OPEN_STATES_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(OPEN_STATES)) + ")"


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any: ...


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What :meth:`IncidentService.handle_warnings` did, per warning of the batch, in order."""

    incidents: tuple[Incident | None, ...]  # the incident it raised or changed; None: no change (or failed)
    failed: tuple[tuple[int, str], ...] = ()  # (index in the batch, error) of the malformed ones, undone


def incident_id(warning_id: str) -> str:
    return "INC-" + hashlib.blake2b(warning_id.encode(), digest_size=5).hexdigest().upper()


def _max(scale: tuple[str, ...], a: str, b: str) -> str:
    return a if scale.index(a if a in scale else scale[0]) >= scale.index(b if b in scale else scale[0]) else b


class IncidentService:
    def __init__(self, settings: Settings, city: City, clock: Clock | None = None,
                 publisher: Publisher | None = None, store: Store | None = None) -> None:
        self.settings = settings
        self.city = city
        self.clock = clock or WallClock()
        self.publisher = publisher
        self.store = store or Store(settings.store)
        self._reminded: dict[str, float] = {}
        self._seed_units()

    # ================================================================ reading

    def get(self, inc_id: str) -> Incident:
        rows = self.store.read("SELECT body FROM incidents WHERE id = ?", (inc_id,))
        if not rows:
            raise NotFound(f"no incident {inc_id!r}")
        return Incident.decode(rows[0][0])

    def list_incidents(self, state: str = "open") -> list[Incident]:
        if state not in ("open", "all"):
            raise ValueError("state must be 'open' or 'all'")
        if state == "open":  # by the state index: the ended incidents of a long run are not read
            marks = ", ".join("?" * len(OPEN_STATES))
            rows = self.store.read(f"SELECT body FROM incidents WHERE state IN ({marks}) ORDER BY started_at DESC",
                                   tuple(sorted(OPEN_STATES)))
        else:
            rows = self.store.read("SELECT body FROM incidents ORDER BY started_at DESC")
        out = [Incident.decode(r[0]) for r in rows]
        sev = {s: k for k, s in enumerate(CAP_SEVERITY)}
        return sorted(out, key=lambda i: (-sev.get(i.severity, 0), i.detected_at))

    def count_open(self) -> int:
        """How many incidents are open, without reading them (the service's heartbeat, every second)."""
        return int(self.store.read(f"SELECT COUNT(*) FROM incidents WHERE state IN {OPEN_STATES_SQL}")[0][0])

    def history(self, inc_id: str) -> list[HistoryEntry]:
        return list(self.get(inc_id).history)

    def units(self) -> list[dict]:
        return [_loads(r[0]) for r in self.store.read("SELECT body FROM units ORDER BY id")]

    def suggest_units(self, inc_id: str, n: int = 5) -> list[dict]:
        inc = self.get(inc_id)
        return dispatch.rank(self.units(), inc.event, inc.location, n)

    def cap_xml(self, inc_id: str) -> str:
        inc = self.get(inc_id)
        return cap.build(inc, self.city, ident=cap.identifier(inc.id, "incident", inc.version), sent=inc.updated_at,
                         msg_type="Alert" if inc.version <= 1 else "Update",
                         references=[(cap.identifier(inc.id, "incident", 1), inc.detected_at)] if inc.version > 1 else ())

    # ================================================================ warnings in

    def handle_warning(self, w: Warning) -> Incident | None:
        """Merge a warning into its incident, open one, or hold a lone weak signal. Idempotent."""
        now = self.clock.now()
        with self._tx() as cur:
            return self._handle_warning(cur, w, now)

    def handle_warnings(self, warnings: Sequence[Warning]) -> BatchResult:
        """Handle warnings in order in one transaction: what one by one would do, at one commit.

        A storm (every sensor of a city warning within a second) took a commit (an fsync) and a
        thread hop per warning. Each warning runs in a savepoint, so one that cannot be handled
        (``ValueError``, ``KeyError``, ``TypeError``: a malformed record) is undone alone and
        reported in :attr:`BatchResult.failed`, as when it had a transaction of its own; any other
        error (the store gone) undoes the whole batch, which the caller then hands in again (its
        Kafka offsets are committed only after this returns).
        """
        out: list[Incident | None] = []
        failed: list[tuple[int, str]] = []
        with self._tx() as cur:
            for k, w in enumerate(warnings):
                try:
                    with cur.savepoint(BAD_RECORD):
                        out.append(self._handle_warning(cur, w, self.clock.now()))
                except BAD_RECORD as e:
                    out.append(None)
                    failed.append((k, f"{type(e).__name__}: {e}"))
        return BatchResult(tuple(out), tuple(failed))

    def _handle_warning(self, cur: Cursor, w: Warning, now: float) -> Incident | None:
        """:meth:`handle_warning` inside the caller's transaction."""
        seen = cur.execute("SELECT incident, body FROM warnings_seen WHERE id = ?", (w.id,)).fetchone()
        body = w.encode().decode()
        if seen and seen[1] == body:
            return None  # delivered twice: changes nothing
        if self._silenced(cur, w, now):
            self._remember(cur, w, None, body, seen)
            audit.append(cur, now, "system", "suppress", w.id, {"reason": "silenced", "warning": w.to_dict()})
            return None
        inc = self._open_incident_for(cur, w)
        if inc is None and not w.active:
            self._remember(cur, w, None, body, seen)
            return None
        if inc is None:
            if w.severity in ("Minor", "Unknown") and not self._repeated(cur, w):
                self._remember(cur, w, None, body, seen)
                return None
            inc = self._new_incident(w, now, self._free_incident_id(cur, w))
            flaps = self._recent_ended(cur, w, now)
            if flaps >= FLAP_LIMIT - 1:
                note = f"flapping: {flaps} {w.event} incidents in {w.grid} ended within the hour"
                inc = inc.replace(title=inc.title + " (flapping)", history=inc.history + (
                    HistoryEntry(t=now, actor="system", action="flapping", state="new", note=note),))
            cur.execute("INSERT INTO incidents (id, state, event, area, started_at, updated_at, version, body) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (inc.id, inc.state, inc.event, inc.area,
                                                             inc.started_at, inc.updated_at, inc.version,
                                                             inc.encode().decode()))
            audit.append(cur, now, "system", "raise", inc.id, {"warning": w.id, "incident": inc.to_dict()})
        else:
            old = inc
            inc = self._relabel_outage(self._merge(inc, w, now), w, now)
            self._save(cur, old, inc, "merge_warning", "system", {"warning": w.id})
            if old.units and (old.severity, old.event) != (inc.severity, inc.event):
                self._cap_to_units(cur, inc, "Update", note=f"{inc.event.replace('_', ' ')}, severity now {inc.severity}")
        self._remember(cur, w, inc.id, body, seen)
        self._queue_incident(cur, inc)
        return inc

    def _remember(self, cur: Cursor, w: Warning, inc_id: str | None, body: str, seen) -> None:
        if seen:
            cur.execute("UPDATE warnings_seen SET incident = ?, body = ? WHERE id = ?", (inc_id, body, w.id))
        else:
            cur.execute("INSERT INTO warnings_seen (id, incident, body) VALUES (?, ?, ?)", (w.id, inc_id, body))

    def _repeated(self, cur: Cursor, w: Warning) -> bool:
        """Hysteresis for weak signals: a Minor warning raises only once it has repeated."""
        key = f"{w.event}|{w.grid}"
        row = cur.execute("SELECT n, first_t FROM pending WHERE id = ?", (key,)).fetchone()
        if row is None:
            cur.execute("INSERT INTO pending (id, body, first_t, n) VALUES (?, ?, ?, 1)", (key, w.id, w.t))
            return False
        n, first_t = row
        if w.t - first_t > MERGE_WINDOW_S:
            cur.execute("UPDATE pending SET n = 1, first_t = ?, body = ? WHERE id = ?", (w.t, w.id, key))
            return False
        cur.execute("UPDATE pending SET n = ? WHERE id = ?", (n + 1, key))
        if n + 1 >= MINOR_MIN_REPEATS:
            cur.execute("DELETE FROM pending WHERE id = ?", (key,))
            return True
        return False

    def _recent_ended(self, cur: Cursor, w: Warning, now: float) -> int:
        """How many incidents of this event in this grid ended (resolved, closed, false alarm) lately."""
        rows = cur.execute("SELECT COUNT(*) FROM incidents WHERE event = ? AND area = ? AND updated_at > ? AND state IN "
                           "('resolved', 'closed', 'false_alarm')", (w.event, w.grid, now - 3600.0)).fetchone()
        return int(rows[0])

    def _open_incident_for(self, cur: Cursor, w: Warning) -> Incident | None:
        """The open incident of the warning's event that it joins: the last one in its own grid,
        else the first in a neighbour, in (state, insertion) order, the order a scan of the state
        index gave when every open incident of the event was read and decoded (a storm's hundreds
        per warning). Only those grids are read now (index on event and area)."""
        near = sorted({w.grid} | set(self.city.neighbours.get(w.grid, ())))
        events = OFFLINE_EVENTS if w.event in OFFLINE_EVENTS else (w.event,)  # silent devices: one situation
        rows = cur.execute(f"SELECT body FROM incidents WHERE event IN ({', '.join('?' * len(events))}) "
                           f"AND area IN ({', '.join('?' * len(near))}) "
                           f"AND state IN {OPEN_STATES_SQL} ORDER BY state, {cur.insertion_order}",
                           (*events, *near)).fetchall()
        best = None
        for (b,) in rows:
            d = json.loads(b)  # the times and area only: only the chosen one becomes a record
            if abs(w.t - d["started_at"]) <= MERGE_WINDOW_S + (d["updated_at"] - d["detected_at"]):
                if best is None or d["area"] == w.grid:
                    best = b
        return None if best is None else Incident.decode(best)

    def _free_incident_id(self, cur: Cursor, w: Warning) -> str:
        """``incident_id(w.id)``, or its next numbered variant when that incident has ended.

        A fused warning keeps its id while its situation lasts, so after an operator closed (or
        called a false alarm on) its incident, a new source joining the situation opens a new
        incident: it must not collide with the ended one. Deterministic given the store, so a
        replay after a crash picks the same id.
        """
        inc_id, n = incident_id(w.id), 1
        while cur.execute("SELECT 1 FROM incidents WHERE id = ?", (inc_id,)).fetchone() is not None:
            n += 1
            inc_id = incident_id(f"{w.id}#{n}")
        return inc_id

    def _new_incident(self, w: Warning, now: float, inc_id: str) -> Incident:
        return Incident(
            id=inc_id, event=w.event, category=EVENT_CAP_CATEGORY.get(w.event, "Other"),
            severity=w.severity, urgency=w.urgency, certainty=w.certainty, state="new", area=w.grid,
            district=w.district or self.city.district_of(w.grid), location=tuple(w.location), started_at=w.started_at,
            detected_at=now, updated_at=now, title=self._title(w.event, w.grid),
            score=w.score, evidence=tuple(w.evidence[:MAX_EVIDENCE]), warnings=(w.id,),
            history=(HistoryEntry(t=now, actor="system", action="raise", state="new", note=w.explanation),), version=1)

    def _title(self, event: str, grid_id: str) -> str:
        grid = self.city.areas.get(grid_id)
        return f"{event.replace('_', ' ').title()} in {grid.name if grid else grid_id}"

    def _relabel_outage(self, inc: Incident, w: Warning, now: float) -> Incident:
        """A ``device_offline`` incident becomes a ``power_outage`` once its evidence shows enough
        devices gone silent at once, or a partition's fusion already called it one.

        Fusion applies the same rule (``citybrain.outage``), but only to its partition's grids; the
        incident gathers the neighbouring grids' silences from every partition.
        """
        if inc.event != "device_offline" or not w.active:
            return inc
        n = silent_at_once((e.source, e.t if e.started_at is None else e.started_at, e.t) for e in inc.evidence)
        if w.event != "power_outage" and n < OUTAGE_SOURCES:
            return inc
        flapping = " (flapping)" if inc.title.endswith(" (flapping)") else ""
        # as fusion scores a situation: the noisy-or of its sources (here each as strong as the strongest)
        score = max(inc.score, 1.0 - (1.0 - min(inc.score, 0.99)) ** n)
        note = f"{n} devices went silent at once: a power outage"
        return inc.replace(event="power_outage", category=EVENT_CAP_CATEGORY["power_outage"], score=score,
                           severity=_max(CAP_SEVERITY, inc.severity, severity_from_score(score)),
                           certainty=_max(CAP_CERTAINTY, inc.certainty, certainty_from_sources(n, score)),
                           title=self._title("power_outage", inc.area) + flapping, history=inc.history + (
                               HistoryEntry(t=now, actor="system", action="update", state=inc.state, note=note),))

    def _merge(self, inc: Incident, w: Warning, now: float) -> Incident:
        ev = {(e.source, e.t): e for e in inc.evidence}
        for e in w.evidence:
            ev.setdefault((e.source, e.t), e)
        evidence = tuple(sorted(ev.values(), key=lambda e: e.t))[-MAX_EVIDENCE:]
        warnings = inc.warnings if w.id in inc.warnings else inc.warnings + (w.id,)
        history = inc.history
        if not w.active:
            note = f"{w.detector}: back to normal; resolution proposed ({w.explanation})"
            history += (HistoryEntry(t=now, actor="system", action="propose_resolve", state=inc.state, note=note),)
        elif w.severity != inc.severity and CAP_SEVERITY.index(w.severity) > CAP_SEVERITY.index(inc.severity):
            history += (HistoryEntry(t=now, actor="system", action="update", state=inc.state,
                                     note=f"severity {inc.severity} -> {w.severity}: {w.explanation}"),)
        return inc.replace(
            severity=_max(CAP_SEVERITY, inc.severity, w.severity) if w.active else inc.severity,
            certainty=_max(CAP_CERTAINTY, inc.certainty, w.certainty),
            urgency=_max(CAP_URGENCY, inc.urgency, w.urgency),
            score=max(inc.score, w.score), started_at=min(inc.started_at, w.started_at),
            evidence=evidence, warnings=warnings, history=history, updated_at=now)

    def _silenced(self, cur: Cursor, w: Warning, now: float) -> bool:
        rows = cur.execute("SELECT scope, value FROM silences WHERE until_t > ?", (now,)).fetchall()
        sources = {e.source for e in w.evidence}
        for scope, value in rows:
            if (scope == "event" and value == w.event) or (scope == "grid" and value == w.grid) or \
                    (scope == "device" and value in sources) or (scope == "district" and value == w.district):
                return True
        return False

    # ================================================================ operators

    def act(self, inc_id: str, action: str, actor: str, unit: str | None = None, note: str = "") -> Incident:
        if action not in OPERATOR_ACTIONS:
            raise IllegalTransition(f"unknown action {action!r}; one of {', '.join(OPERATOR_ACTIONS)}")
        now = self.clock.now()
        with self._tx() as cur:
            inc = self._load(cur, inc_id)
            new_state = next_state(inc.state, action)
            changes: dict[str, Any] = {}
            if action == "dispatch":
                unit_row = self._pick_unit(cur, inc, unit)
                changes["units"] = inc.units + ((unit_row["id"],) if unit_row["id"] not in inc.units else ())
                note = note or f"{unit_row['id']} dispatched"
            entry = HistoryEntry(t=now, actor=actor, action=action, state=new_state, note=note)
            new = inc.replace(state=new_state, updated_at=now, history=inc.history + (entry,), **changes)
            self._save(cur, inc, new, action, actor, {"note": note, "unit": unit})
            if action == "dispatch":
                self._set_unit(cur, unit_row["id"], state="en_route", incident=inc.id, t=now)
                self._cap_to_units(cur, new, "Alert", only=unit_row["id"], note=note)
            elif action == "false_alarm":
                self._cap_to_units(cur, new, "Cancel", note="false alarm: stand down")
                self._release_units(cur, new, now)
            elif action == "resolve":
                self._cap_to_units(cur, new, "Update", note="incident resolved: return to base")
                self._release_units(cur, new, now)
            self._queue_incident(cur, new)
        return new

    def _pick_unit(self, cur: Cursor, inc: Incident, unit: str | None) -> dict:
        units = {u["id"]: u for u in (_loads(r[0]) for r in cur.execute("SELECT body FROM units").fetchall())}
        if unit is None:
            ranked = dispatch.rank(list(units.values()), inc.event, inc.location, 1)
            if not ranked:
                raise IllegalTransition(f"no suitable unit is available for a {inc.event}")
            return units[ranked[0]["id"]]
        if unit not in units:
            raise NotFound(f"no unit {unit!r}")
        if units[unit]["state"] != "available":
            raise IllegalTransition(f"unit {unit} is {units[unit]['state']}, not available")
        return units[unit]

    # ================================================================ units

    def handle_unit_status(self, s: UnitStatus) -> Incident | None:
        now = self.clock.now()
        result = None
        with self._tx() as cur:
            row = cur.execute("SELECT body FROM units WHERE id = ?", (s.unit,)).fetchone()
            if row is None:
                log.warning("status of unknown unit %s ignored", s.unit)
                return None
            prev = _loads(row[0])
            if prev.get("updated_at", 0) > s.t:
                return None  # an older report than what we know
            incident = s.incident if s.state in ("en_route", "on_scene") else None
            self._set_unit(cur, s.unit, state=s.state, incident=incident, t=s.t, location=s.location)
            audit.append(cur, now, s.unit, "unit_status", s.unit, s.to_dict())
            if s.state == "on_scene" and s.incident:
                try:
                    inc = self._load(cur, s.incident)
                except NotFound:
                    inc = None
                if inc is not None and inc.state == "dispatched":
                    entry = HistoryEntry(t=now, actor=s.unit, action="arrive", state="on_scene",
                                         note=f"{s.unit} on scene")
                    result = inc.replace(state="on_scene", updated_at=now, history=inc.history + (entry,))
                    self._save(cur, inc, result, "arrive", s.unit, {"status": s.to_dict()})
                    self._queue_incident(cur, result)
        return result

    def _seed_units(self) -> None:
        with self._tx() as cur:
            have = {r[0] for r in cur.execute("SELECT id FROM units").fetchall()}
            for u in self.city.units.values():
                if u.id not in have:
                    cur.execute("INSERT INTO units (id, body) VALUES (?, ?)", (u.id, dumps({
                        "id": u.id, "type": u.type, "state": "available", "location": list(u.base),
                        "base": list(u.base), "incident": None, "updated_at": 0.0})))

    def _set_unit(self, cur: Cursor, unit_id: str, *, state: str, incident: str | None, t: float,
                  location=None) -> None:
        row = cur.execute("SELECT body FROM units WHERE id = ?", (unit_id,)).fetchone()
        u = _loads(row[0])
        u.update(state=state, incident=incident, updated_at=t)
        if location:
            u["location"] = list(location)
        cur.execute("UPDATE units SET body = ? WHERE id = ?", (dumps(u), unit_id))

    def _release_units(self, cur: Cursor, inc: Incident, now: float) -> None:
        for uid in inc.units:
            row = cur.execute("SELECT body FROM units WHERE id = ?", (uid,)).fetchone()
            if row and _loads(row[0]).get("incident") == inc.id:
                self._set_unit(cur, uid, state="returning", incident=None, t=now)

    # ================================================================ timers

    def tick(self) -> list[Incident]:
        """Escalate unacknowledged incidents and remind about escalated ones."""
        now = self.clock.now()
        changed = []
        with self._tx() as cur:
            rows = cur.execute("SELECT body FROM incidents WHERE state IN ('new', 'escalated')").fetchall()
            for (b,) in rows:
                due = self._timer_due(json.loads(b), now)
                if due is None:
                    continue
                inc = Incident.decode(b)
                if due == "escalate":
                    entry = HistoryEntry(t=now, actor="system", action="escalate", state="escalated",
                                         note=f"not acknowledged within {ESCALATE_AFTER_S.get(inc.severity):.0f} s")
                    new = inc.replace(state="escalated", updated_at=now, history=inc.history + (entry,))
                    self._save(cur, inc, new, "escalate", "system", {})
                    self._queue_incident(cur, new)
                    self._reminded[inc.id] = now
                    changed.append(new)
                else:
                    self._reminded[inc.id] = now
                    audit.append(cur, now, "system", "remind", inc.id, {"state": inc.state})
                    self._queue_incident(cur, inc)
        return changed

    def _timer_due(self, d: dict, now: float) -> str | None:
        """``"escalate"``, ``"remind"`` or None, decided on an incident's plain JSON: the timers look
        at every unacknowledged incident every second (a storm leaves thousands), and in the storm
        profile json.loads was a fifth of what building the record (``Incident.decode``) cost."""
        if d["state"] == "new" and now - d["detected_at"] >= ESCALATE_AFTER_S.get(d["severity"], 900.0):
            return "escalate"
        if d["state"] == "escalated" and now - self._reminded.get(d["id"], d["updated_at"]) >= REMIND_EVERY_S:
            return "remind"
        return None

    # ================================================================ silences

    def add_silence(self, scope: str, value: str, until: float, actor: str, note: str = "") -> dict:
        if scope not in ("device", "grid", "event", "district"):
            raise ValueError("scope must be one of device, grid, event, district")
        if not isinstance(value, str) or not value:
            raise ValueError("value must be a non-empty string")
        known = {"device": self.city.devices, "grid": self.city.areas, "district": self.city.areas,
                 "event": EVENTS}[scope]
        if value not in known or (scope in ("grid", "district") and self.city.areas[value].level != scope):
            raise ValueError(f"{value!r} is not a {scope} of this city" if scope != "event"
                             else f"{value!r} is not an event type ({', '.join(sorted(EVENTS))})")
        if isinstance(until, bool) or not isinstance(until, (int, float)) or not math.isfinite(until):
            raise ValueError(f"until must be a finite number of epoch seconds, got {until!r}")
        now = self.clock.now()
        if until <= now:
            raise ValueError("until must be in the future")
        s = {"id": "SIL-" + uuid.uuid4().hex[:8], "scope": scope, "value": value, "until": float(until),
             "actor": actor, "note": note, "created_at": now}
        with self._tx() as cur:
            cur.execute("INSERT INTO silences (id, scope, value, until_t, body) VALUES (?, ?, ?, ?, ?)",
                        (s["id"], scope, value, s["until"], dumps(s)))
            audit.append(cur, now, actor, "silence", s["id"], s)
        return s

    def list_silences(self) -> list[dict]:
        now = self.clock.now()
        return [_loads(r[0]) for r in self.store.read("SELECT body FROM silences WHERE until_t > ? ORDER BY until_t",
                                                       (now,))]

    def remove_silence(self, silence_id: str, actor: str) -> None:
        with self._tx() as cur:
            if cur.execute("DELETE FROM silences WHERE id = ?", (silence_id,)).rowcount == 0:
                raise NotFound(f"no silence {silence_id!r}")
            audit.append(cur, self.clock.now(), actor, "unsilence", silence_id, {})

    # ================================================================ figures

    def performance(self) -> dict:
        """Median seconds to acknowledge, dispatch, arrive and resolve, per district and unit type."""
        by: dict[str, dict[str, dict[str, list[float]]]] = {"district": defaultdict(lambda: defaultdict(list)),
                                                             "unit_type": defaultdict(lambda: defaultdict(list))}
        unit_types = {u.id: u.type for u in self.city.units.values()}
        overall: dict[str, list[float]] = defaultdict(list)
        for inc in self.list_incidents("all"):
            firsts: dict[str, float] = {}
            for h in inc.history:
                firsts.setdefault(h.action, h.t)
            for step, action in (("acknowledge", "acknowledge"), ("dispatch", "dispatch"), ("arrive", "arrive"),
                                 ("resolve", "resolve")):
                if action in firsts:
                    dt = firsts[action] - inc.detected_at
                    overall[step].append(dt)
                    by["district"][inc.district][step].append(dt)
                    for uid in inc.units[:1]:
                        by["unit_type"][unit_types.get(uid, "?")][step].append(dt)

        def med(d):
            return {k: {"median_s": round(statistics.median(v), 1), "n": len(v)} for k, v in d.items()}

        return {"overall": med(overall), "by_district": {k: med(v) for k, v in by["district"].items()},
                "by_unit_type": {k: med(v) for k, v in by["unit_type"].items()}}

    def kpis(self) -> dict:
        incs = self.list_incidents("open")
        sev = {s: 0 for s in CAP_SEVERITY[1:]}
        for i in incs:
            sev[i.severity] = sev.get(i.severity, 0) + 1
        units = self.units()
        day_start = self.clock.now() - 86400
        acks, arrivals = [], []
        for inc in self.list_incidents("all"):
            if inc.detected_at < day_start:
                continue
            for h in inc.history:
                if h.action == "acknowledge":
                    acks.append(h.t - inc.detected_at)
                    break
            for h in inc.history:
                if h.action == "arrive":
                    arrivals.append(h.t - inc.detected_at)
                    break
        return {"open": len(incs), "open_by_severity": sev,
                "escalated": sum(1 for i in incs if i.state == "escalated"),
                "units_available": sum(1 for u in units if u["state"] == "available"),
                "units_busy": sum(1 for u in units if u["state"] in ("en_route", "on_scene", "returning")),
                "median_ack_s": statistics.median(acks) if acks else None,
                "median_arrive_s": statistics.median(arrivals) if arrivals else None}

    # ================================================================ plumbing

    def _load(self, cur: Cursor, inc_id: str) -> Incident:
        row = cur.execute("SELECT body FROM incidents WHERE id = ?", (inc_id,)).fetchone()
        if row is None:
            raise NotFound(f"no incident {inc_id!r}")
        return Incident.decode(row[0])

    def _save(self, cur: Cursor, old: Incident, new: Incident, action: str, actor: str, extra: dict) -> None:
        new = new.replace(version=old.version + 1)
        n = cur.execute("UPDATE incidents SET state = ?, updated_at = ?, version = ?, body = ?, started_at = ?, "
                        "event = ? WHERE id = ? AND version = ?", (new.state, new.updated_at, new.version,
                                                                  new.encode().decode(), new.started_at, new.event,
                                                                  new.id, old.version)).rowcount
        if n != 1:
            raise IllegalTransition(f"incident {old.id} was changed by someone else; retry")
        audit.append(cur, new.updated_at, actor, action, new.id,
                     {"from": old.state, "to": new.state, **extra, "version": new.version})

    def _queue_incident(self, cur: Cursor, inc: Incident) -> None:
        current = self._load(cur, inc.id)  # the saved version (with its version number)
        payload = current.encode()
        self._queue(cur, f"city/alerts/{inc.id}", payload)

    def _cap_to_units(self, cur: Cursor, inc: Incident, msg_type: str, only: str | None = None, note: str = "") -> None:
        now = self.clock.now()
        for uid in ([only] if only else list(inc.units)):
            first = cap.identifier(inc.id, f"dispatch-{uid}", 1)
            ident = first if msg_type == "Alert" else cap.identifier(inc.id, f"{msg_type.lower()}-{uid}", inc.version)
            refs = [] if msg_type == "Alert" else [(first, inc.detected_at)]
            xml = cap.build(inc, self.city, ident=ident, sent=now, msg_type=msg_type, scope="Private", addresses=uid,
                            references=refs, note=note, response="Execute" if msg_type != "Cancel" else "AllClear",
                            instruction=f"{uid}: proceed to {inc.location[0]:.5f},{inc.location[1]:.5f}"
                            if msg_type == "Alert" else None)
            self._queue(cur, f"city/units/{uid}/dispatch", xml.encode())

    def _queue(self, cur: Cursor, topic: str, payload: bytes) -> None:
        audit.append(cur, self.clock.now(), "system", "publish", topic,
                     {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)})
        cur.outbox.append((topic, payload))

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        """A write transaction whose messages are published only after it commits."""
        with self.store.tx() as cur:
            cur.outbox = []
            yield cur
        if self.publisher is None:
            return
        for topic, payload in cur.outbox:
            try:
                self.publisher.publish(topic, payload, qos=1, retain=False)
            except Exception as e:  # noqa: BLE001 - a broker hiccup must not undo a committed change
                log.warning("publish to %s failed: %s", topic, e)


def _loads(s: str) -> dict:
    return json.loads(s)


__all__ = ["BatchResult", "IncidentService", "incident_id"]
