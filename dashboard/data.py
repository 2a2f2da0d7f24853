"""Data access for the screen and the API: one place that reads the incident service, the stats
files and the time-series store, and caches what every client asks for every second.

Why a snapshot with an etag: every open screen polls once a second. The snapshot is computed at
most every ``SNAPSHOT_TTL_S`` whoever asks, and its etag (a hash of incident versions and unit
states) lets a client skip an update when nothing changed, so ten screens cost what one does.
Everything here degrades: no incident service, no time-series store or no stats files give an
empty but truthful screen, never an exception in a callback.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from citybrain import health as cb_health
from citybrain.city import City
from citybrain.clock import Clock, WallClock
from citybrain.records import Incident
from citybrain.settings import Settings
from citybrain.vocab import CAP_SEVERITY, OPEN_STATES
from dashboard import risk

log = logging.getLogger(__name__)

SNAPSHOT_TTL_S = 0.25
TODAY_TTL_S = 5.0
BUSY_STATES = frozenset({"en_route", "on_scene", "returning"})


def severity_rank(sev: str) -> int:
    return CAP_SEVERITY.index(sev) if sev in CAP_SEVERITY else 0


def queue_order(incidents: list[Incident]) -> list[Incident]:
    """Escalated first, then by severity (worst first), then oldest first."""
    return sorted(incidents, key=lambda i: (i.state != "escalated", -severity_rank(i.severity), i.detected_at, i.id))


def first_time(inc: Incident, state: str) -> float | None:
    return next((h.t for h in inc.history if h.state == state), None)


def response_times(incidents: list[Incident]) -> tuple[list[float], list[float]]:
    """(seconds to acknowledge, seconds from dispatch to arrival) of these incidents."""
    ack, arrive = [], []
    for inc in incidents:
        t_ack = first_time(inc, "acknowledged")
        if t_ack is not None:
            ack.append(max(t_ack - inc.detected_at, 0.0))
        t_disp, t_scene = first_time(inc, "dispatched"), first_time(inc, "on_scene")
        if t_disp is not None and t_scene is not None:
            arrive.append(max(t_scene - t_disp, 0.0))
    return ack, arrive


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def build_health(settings: Settings, now: float, stats: dict[str, dict] | None = None) -> dict[str, Any]:
    """``GET /api/health`` from the stats files (supervisor, ingest, streams, alerts).

    A component is up when its supervisor entry says so (while the supervisor itself is fresh)
    and, for components that write a heartbeat, that heartbeat is fresh. The command center is up
    by definition: it is answering.
    """
    stats = cb_health.read_all(settings.run_dir) if stats is None else stats
    components: dict[str, str] = {}
    sup = stats.get("supervisor")
    if sup and cb_health.is_up(sup, now):
        for name, c in (sup.get("components") or {}).items():
            state = c.get("state") if isinstance(c, dict) else c
            components[name] = "up" if state in ("up", "external") else "down"
    for name, st in stats.items():
        if name in ("supervisor", "dashboard"):
            continue
        beat = "up" if cb_health.is_up(st, now) else "down"
        components[name] = "down" if "down" in (beat, components.get(name, "up")) else "up"
    components["dashboard"] = "up"
    problems = _problems(stats, components, now)
    ingest = _merged_ingest([st for name, st in stats.items() if name == "ingest" or name.startswith("ingest-")])
    streams = stats.get("streams", {})
    return {
        "components": dict(sorted(components.items())),
        "ingest_rate": float(ingest.get("rate", 0.0) or 0.0),
        "lag": int(streams.get("lag", 0) or 0),
        "accepted": int(ingest.get("accepted", 0) or 0),
        "rejected": int(ingest.get("rejected", 0) or 0),
        "rejected_by_reason": dict(ingest.get("rejected_by_reason") or {}),
        "recent_rejects": list(ingest.get("recent_rejects") or [])[-50:],
        "streams": {k: streams.get(k) for k in ("readings", "warnings", "late", "duplicates") if k in streams},
        "alerts": {k: stats.get("alerts", {}).get(k) for k in ("warnings_in", "incidents_open", "published",
                                                               "store_outages", "store_error")
                   if k in stats.get("alerts", {})},
        "problems": problems,
        "t": now,
    }


def _merged_ingest(parts: list[dict]) -> dict:
    """Several ingest processes sharing the feed report as one stage: counts and rates add up."""
    if len(parts) == 1:
        return parts[0]
    by_reason: dict[str, int] = {}
    for st in parts:
        for reason, n in (st.get("rejected_by_reason") or {}).items():
            by_reason[reason] = by_reason.get(reason, 0) + int(n)
    recent = sorted((r for st in parts for r in st.get("recent_rejects") or []), key=lambda r: float(r.get("t", 0)))
    return {"accepted": sum(int(st.get("accepted", 0) or 0) for st in parts),
            "rejected": sum(int(st.get("rejected", 0) or 0) for st in parts),
            "rate": sum(float(st.get("rate", 0.0) or 0.0) for st in parts),
            "rejected_by_reason": by_reason, "recent_rejects": recent[-50:]}


def _problems(stats: dict, components: dict[str, str], now: float) -> dict[str, str]:
    """Why each down component is down, in words an operator can act on."""
    out: dict[str, str] = {}
    sup = (stats.get("supervisor") or {}).get("components") or {}
    for name, state in components.items():
        if state == "up":
            continue
        st = stats.get(name) or {}
        reasons = [str(v) for k, v in sorted(st.items()) if k.endswith("_error") and v]
        if reasons:
            out[name] = "; ".join(reasons)
        elif st and not cb_health.is_fresh(st, now):
            out[name] = f"no heartbeat for {now - float(st.get('t', 0)):.0f} s"
        elif isinstance(sup.get(name), dict) and sup[name].get("state") not in (None, "up", "external"):
            out[name] = f"{sup[name]['state']} (restarts: {sup[name].get('restarts', 0)})"
        else:
            out[name] = "not reporting"
    return out


class Serialized:
    """The incident service with one call at a time: the web server answers from many threads,
    and the facade (and its store connection) is not required to be thread-safe."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._service, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        call.__signature__ = inspect.signature(attr)  # type: ignore[attr-defined]  # for silences' fields
        return call


@dataclass(frozen=True)
class Snapshot:
    """What every screen shows, computed once for all clients."""

    t: float
    incidents: list[Incident]  # open, in queue order
    units: list[dict]
    offline: frozenset[str]
    risk: risk.RiskMap
    etag: str
    service_ok: bool = True
    by_id: dict[str, Incident] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)


class DataSource:
    """The screen's and API's view of the system. Thread-safe; cheap to call every second."""

    def __init__(self, settings: Settings, city: City, service: Any | None, clock: Clock | None = None) -> None:
        self.settings, self.city = settings, city
        self.service = Serialized(service) if service is not None else None
        self.clock = clock or WallClock()
        self.counts = risk.DeviceCounts(city)
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._snap_at = -1.0
        self._today: tuple[float, dict] = (-1.0, {})
        self._reader: Any = None
        self._reader_failed_at = -1e9

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> Snapshot:
        mono = time.monotonic()
        with self._lock:
            if self._snap is not None and mono - self._snap_at < SNAPSHOT_TTL_S:
                return self._snap
            self._snap = self._build()
            self._snap_at = mono
            return self._snap

    def _build(self) -> Snapshot:
        now = self.clock.now()
        incidents: list[Incident] = []
        units: list[dict] = []
        ok = self.service is not None
        if self.service is not None:
            try:
                incidents = [i for i in self.service.list_incidents("open") if i.state in OPEN_STATES]
                units = list(self.service.units())
            except Exception:  # the store may be restarting: show the last known state as stale
                log.exception("incident service unavailable")
                ok = False
                if self._snap is not None:
                    incidents, units = self._snap.incidents, self._snap.units
        incidents = queue_order(incidents)
        stats = cb_health.read_all(self.settings.run_dir)
        h = build_health(self.settings, now, stats)
        offline = frozenset(
            e.source for i in incidents if i.event == "device_offline" for e in i.evidence
        ) | frozenset(stats.get("ingest", {}).get("offline_devices") or ())
        rm = risk.compute(self.city, incidents, offline, now, self.counts)
        etag = hashlib.blake2b(digest_size=8)
        for i in incidents:
            etag.update(f"{i.id}:{i.version}:{i.state}:{i.updated_at};".encode())
        for u in units:
            etag.update(f"{u.get('id')}:{u.get('state')}:{u.get('incident')}:{u.get('location')};".encode())
        etag.update(f"{sorted(offline)}:{ok}:{int(now // 30)}".encode())  # lateness terms move with time
        return Snapshot(now, incidents, units, offline, rm, etag.hexdigest(), ok, {i.id: i for i in incidents}, h)

    # ------------------------------------------------------------------ incidents

    def incident(self, inc_id: str) -> Incident | None:
        snap = self.snapshot()
        if inc_id in snap.by_id:
            return snap.by_id[inc_id]
        if self.service is None:
            return None
        try:
            return self.service.get(inc_id)
        except Exception:
            return None

    def suggestions(self, inc_id: str, n: int = 5) -> list[dict]:
        """Suggested units as dicts with at least ``id`` (the facade may return ids or dicts)."""
        if self.service is None:
            return []
        try:
            raw = self.service.suggest_units(inc_id, n=n)
        except Exception:
            log.exception("suggest_units(%s) failed", inc_id)
            return []
        out = []
        for s in raw:
            if isinstance(s, dict):
                out.append(s)
            elif isinstance(s, str):
                out.append({"id": s})
            else:
                out.append({"id": getattr(s, "id", str(s)), "type": getattr(s, "type", "")})
        return out

    # ------------------------------------------------------------------ silences (admin)

    def silences(self) -> list[dict]:
        if self.service is None or not hasattr(self.service, "list_silences"):
            return []
        return [s if isinstance(s, dict) else s.to_dict() for s in self.service.list_silences()]

    def remove_silence(self, sid: str, actor: str) -> None:
        """Through the facade, naming the actor when the facade records one."""
        fn = self.service.remove_silence
        if "actor" in inspect.signature(fn).parameters:
            fn(sid, actor=actor)
        else:
            fn(sid)

    # ------------------------------------------------------------------ KPIs

    def kpis(self) -> dict[str, Any]:
        """The numbers of the KPI strip (open by severity, units, response medians, devices, ingest)."""
        snap = self.snapshot()
        by_sev = {s: 0 for s in reversed(CAP_SEVERITY)}
        for i in snap.incidents:
            by_sev[i.severity if i.severity in by_sev else "Unknown"] += 1
        avail = sum(1 for u in snap.units if u.get("state") == "available")
        busy = sum(1 for u in snap.units if u.get("state") in BUSY_STATES)
        h = snap.health
        total = max(len(self.city.devices), 1)
        return {
            "open": len(snap.incidents),
            "open_by_severity": by_sev,
            "escalated": sum(1 for i in snap.incidents if i.state == "escalated"),
            "units_available": avail,
            "units_busy": busy,
            "units_total": len(snap.units) or len(self.city.units),
            **self._today_medians(snap.t),
            "devices_online_pct": round(100.0 * (1 - len(snap.offline) / total), 1),
            "ingest_rate": h["ingest_rate"],
            "lag": h["lag"],
            "components_down": sorted(k for k, v in h["components"].items() if v != "up"),
        }

    def _today_medians(self, now: float) -> dict[str, float | None]:
        """Median seconds to acknowledge and to arrive, over incidents detected today (city time)."""
        at, cached = self._today
        if now - at < TODAY_TTL_S and cached:
            return cached
        out: dict[str, float | None] = {"median_ack_s": None, "median_arrive_s": None}
        if self.service is not None:
            try:
                tz = ZoneInfo(self.city.timezone)
            except Exception:
                tz = ZoneInfo("UTC")
            midnight = datetime.fromtimestamp(now, tz).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
            try:
                today = [i for i in self.service.list_incidents("all") if i.detected_at >= midnight]
                ack, arrive = response_times(today)
                out = {"median_ack_s": _median(ack), "median_arrive_s": _median(arrive)}
            except Exception:
                log.exception("cannot compute today's response times")
        self._today = (now, out)
        return out

    # ------------------------------------------------------------------ evidence

    def window(self, device: str, t0: float, t1: float) -> tuple[list[float], list[float]] | None:
        """Readings of one device in [t0, t1] from the time-series store, or None if unavailable."""
        reader = self._timeseries()
        if reader is None:
            return None
        try:
            t, v = reader.window(device, t0, t1)
            return [float(x) for x in t], [float(x) for x in v]
        except Exception:
            log.exception("time-series window of %s failed", device)
            return None

    def _timeseries(self) -> Any:
        if self._reader is not None:
            return self._reader
        if time.monotonic() - self._reader_failed_at < 30.0:
            return None
        try:
            from citybrain import timeseries

            self._reader = timeseries.open_reader(self.settings)
        except Exception as e:  # not written yet, or the store is down: retry later
            log.warning("time-series store unavailable: %s", e)
            self._reader_failed_at = time.monotonic()
        return self._reader
