"""Pure figure functions: city data in, plotly figure dicts out (unit-tested without a browser).

Why plain ``scatter`` traces on lon/lat and not a map style: the command center runs without
internet, and plotly's map styles fetch tiles and glyph fonts. Areas are filled scatter polygons,
one trace per colour bucket with ``None`` between polygons (never one trace per grid), the axes
locked to an equal ground scale. Geometry of a view is built once and cached
(:class:`MapGeometry`); each live update sends only the dynamic traces (risk overlays, markers),
and devices are aggregated server-side into at most ``MAX_MARKERS`` markers for the visible box.
Figures are dicts rather than ``go.Figure`` objects because validating 100,000 coordinates on
every update costs more than the update itself; tests validate them with ``go.Figure``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from citybrain.city import City
from citybrain.records import Incident
from dashboard import risk

# ---------------------------------------------------------------- theme (dark, legible across a room)
BG = "#0b1320"
PANEL = "#111c2e"
INK = "#e8eef6"
MUTED = "#8fa3bf"
OUTLINE = "#2e4a66"
FONT = "Inter, 'DejaVu Sans', Arial, sans-serif"
SEVERITY_COLOUR = {"Extreme": "#ff3b5c", "Severe": "#ff8a3d", "Moderate": "#ffd23f", "Minor": "#7fc8f8",
                   "Unknown": "#b0bec5"}
SEVERITY_SIZE = {"Extreme": 22, "Severe": 18, "Moderate": 15, "Minor": 12, "Unknown": 12}
UNIT_COLOUR = {"available": "#38d98a", "en_route": "#4aa3ff", "on_scene": "#ffd23f", "returning": "#a98bff",
               "out_of_service": "#5c6670"}
MAX_MARKERS = 1500  # devices drawn one by one below this; aggregated into cells above
GRID_OUTLINE_MAX = 2000  # more grids than this in a view: grids show only through their risk colour

# ---------------------------------------------------------------- trace order (fixed: patches address them)
T_BASE, T_CHILD = 0, 1
T_RISK = (2, 3, 4, 5)  # buckets 1..4 of risk.BUCKETS (calm is the base fill)
T_DEVICES, T_CAMERAS, T_UNITS, T_INCIDENTS, T_LABELS = 6, 7, 8, 9, 10
DYNAMIC = (*T_RISK, T_DEVICES, T_CAMERAS, T_UNITS, T_INCIDENTS, T_LABELS)


def _ring(poly: np.ndarray) -> tuple[list, list]:
    """A closed ring plus the ``None`` separator, rounded to ~1 m (smaller JSON)."""
    xs = [round(float(x), 5) for x in poly[:, 0]]
    ys = [round(float(y), 5) for y in poly[:, 1]]
    return xs + [xs[0], None], ys + [ys[0], None]


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Monotone-chain hull: the outline of an area whose city file gives no polygon."""
    pts = np.unique(np.asarray(points, dtype=float), axis=0)
    if len(pts) < 3:
        return pts

    def half(seq: np.ndarray) -> list:
        out: list = []
        for p in seq:
            while len(out) >= 2 and np.cross(out[-1] - out[-2], p - out[-2]) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(pts) + half(pts[::-1]))


@dataclass(frozen=True)
class MapGeometry:
    """Everything static about one view (the city or one area): cached, sent once."""

    area: str | None
    grids: tuple[str, ...]
    rings: dict[str, tuple[list, list]]  # grid id -> (xs, ys) with separator
    children: tuple[str, ...]
    child_names: tuple[str, ...]
    child_xy: tuple[tuple[float, float], ...]
    child_x: list
    child_y: list
    bounds: tuple[float, float, float, float]
    dev_ids: np.ndarray
    dev_xy: np.ndarray  # (n, 2)
    dev_camera: np.ndarray  # bool
    draw_grids: bool

    @property
    def aspect(self) -> float:
        """y-axis scale ratio so that a metre north is as long as a metre east."""
        mid = (self.bounds[1] + self.bounds[3]) / 2
        return 1.0 / max(math.cos(math.radians(mid)), 0.05)


def area_polygon(city: City, area_id: str) -> np.ndarray:
    a = city.areas[area_id]
    if a.polygon:
        return np.asarray(a.polygon, dtype=float)
    return convex_hull(np.array([p for g in city.grids_under(area_id) for p in city.areas[g].polygon]))


class GeometryCache:
    """Views' geometry by area id, least recently used first out (bounded memory).

    One lock: two screens opening the same district build its geometry once, not twice.
    """

    def __init__(self, city: City, maxsize: int = 64) -> None:
        self.city, self.maxsize = city, maxsize
        self._cache: OrderedDict[str | None, MapGeometry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, area: str | None) -> MapGeometry:
        with self._lock:
            if area in self._cache:
                self._cache.move_to_end(area)
                return self._cache[area]
            g = self._cache[area] = geometry(self.city, area)
            while len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)
            return g


def geometry(city: City, area: str | None) -> MapGeometry:
    """The static geometry of a view: the grids under ``area`` (all when None) and its children."""
    grids = tuple(city.grids_under(area)) if area else tuple(g.id for g in city.grids)
    rings = {g: _ring(np.asarray(city.areas[g].polygon, dtype=float)) for g in grids}
    kids = city.children(area) if area is None or city.areas[area].level != "grid" else ()
    cx, cy, centres, names = [], [], [], []
    for k in kids:
        poly = area_polygon(city, k)
        xs, ys = _ring(poly)
        cx += xs
        cy += ys
        c = poly.mean(axis=0) if len(poly) else np.array([math.nan, math.nan])
        centres.append((round(float(c[0]), 5), round(float(c[1]), 5)))
        names.append(city.areas[k].name)
    pts = np.array([p for g in grids for p in city.areas[g].polygon] or [[0.0, 0.0]], dtype=float)
    bounds = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    gset = set(grids)
    devs = [d for d in city.devices.values() if d.area in gset]
    return MapGeometry(
        area=area, grids=grids, rings=rings, children=tuple(kids), child_names=tuple(names),
        child_xy=tuple(centres), child_x=cx, child_y=cy, bounds=bounds,
        dev_ids=np.array([d.id for d in devs], dtype=object),
        dev_xy=np.array([d.location for d in devs], dtype=float).reshape(-1, 2),
        dev_camera=np.array([d.is_camera for d in devs], dtype=bool),
        draw_grids=len(grids) <= GRID_OUTLINE_MAX,
    )


def _concat(rings: Iterable[tuple[list, list]]) -> tuple[list, list]:
    xs: list = []
    ys: list = []
    for x, y in rings:
        xs += x
        ys += y
    return xs, ys


# ---------------------------------------------------------------- the map


def static_traces(geom: MapGeometry) -> list[dict]:
    """Base fill (every grid, calm colour) and child-area outlines: drawn once per view."""
    calm = risk.BUCKETS[0][2]
    if geom.draw_grids:
        bx, by = _concat(geom.rings[g] for g in geom.grids)
        base = {"type": "scatter", "x": bx, "y": by, "mode": "lines", "fill": "toself", "fillcolor": calm,
                "line": {"color": OUTLINE, "width": 0.5}, "hoverinfo": "skip", "name": "grids"}
    else:  # too many grids to outline: fill the child areas instead
        base = {"type": "scatter", "x": geom.child_x, "y": geom.child_y, "mode": "lines", "fill": "toself",
                "fillcolor": calm, "line": {"color": OUTLINE, "width": 0.5}, "hoverinfo": "skip", "name": "grids"}
    child = {"type": "scatter", "x": geom.child_x, "y": geom.child_y, "mode": "lines",
             "line": {"color": "#7f9cc0", "width": 2}, "hoverinfo": "skip", "name": "areas"}
    return [base, child]


def risk_traces(geom: MapGeometry, rm: risk.RiskMap) -> list[dict]:
    """One filled trace per elevated bucket, holding only the grids in that bucket."""
    members: list[list[str]] = [[] for _ in risk.BUCKETS]
    for g in geom.grids:
        s = rm.scores.get(g)
        if s is not None:
            members[risk.bucket(s)].append(g)
    out = []
    for k in range(1, len(risk.BUCKETS)):
        xs, ys = _concat(geom.rings[g] for g in members[k])
        _, name, colour = risk.BUCKETS[k]
        out.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines", "fill": "toself", "fillcolor": colour,
                    "opacity": 0.85, "line": {"color": colour, "width": 1}, "hoverinfo": "skip", "name": name})
    return out


def label_trace(geom: MapGeometry, rm: risk.RiskMap, size: int | None = None) -> dict:
    """Child areas at their centres: a dot in the area's risk colour, name and index beside it.

    White text with a dark shadow stays legible over any fill; clicking a label drills in.
    """
    scores = [rm.of(k) for k in geom.children]
    few = len(geom.children) <= 40
    return {
        "type": "scatter", "mode": "markers+text", "name": "areas",
        "x": [c[0] for c in geom.child_xy], "y": [c[1] for c in geom.child_xy],
        "text": [f"<b>{n}</b> {s:.0f}" if few else (f"{s:.0f}" if s >= 10 else "")
                 for n, s in zip(geom.child_names, scores)],
        "customdata": list(geom.children),
        "textfont": {"color": INK, "size": size or (16 if len(geom.children) <= 12 else 12), "family": FONT,
                     "shadow": "1px 1px 3px #000000"},
        "textposition": "middle right",
        "marker": {"size": (size or 16) + 2, "color": [risk.BUCKETS[risk.bucket(s)][2] for s in scores],
                   "line": {"color": INK, "width": 1.5}},
        "hovertemplate": "%{customdata}: risk %{text}<extra>click to drill down</extra>",
    }


def aggregate_points(xy: np.ndarray, box: tuple[float, float, float, float], max_markers: int = MAX_MARKERS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points inside ``box`` as (x, y, count): one per point when few, else one per cell.

    Cells form a square-ish lattice over the box sized so that at most ``max_markers`` cells
    exist; each marker sits at the mean of its points, so clusters stay where the devices are.
    """
    if len(xy) == 0:
        e = np.zeros(0)
        return e, e, e.astype(int)
    x0, y0, x1, y1 = box
    inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
    pts = xy[inside]
    if len(pts) <= max_markers:
        return pts[:, 0], pts[:, 1], np.ones(len(pts), dtype=int)
    side = max(int(math.sqrt(max_markers)) - 1, 1)
    w, h = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
    ix = np.minimum(((pts[:, 0] - x0) / w * side).astype(int), side - 1)
    iy = np.minimum(((pts[:, 1] - y0) / h * side).astype(int), side - 1)
    cell = ix * side + iy
    uniq, inv, counts = np.unique(cell, return_inverse=True, return_counts=True)
    sx = np.bincount(inv, weights=pts[:, 0]) / counts
    sy = np.bincount(inv, weights=pts[:, 1]) / counts
    return sx, sy, counts


def device_trace(geom: MapGeometry, box: tuple[float, float, float, float], cameras: bool,
                 offline: frozenset[str], visible: bool) -> dict:
    """Sensors or cameras in the visible box, aggregated server-side when there are many."""
    sel = geom.dev_camera if cameras else ~geom.dev_camera
    name = "cameras" if cameras else "sensors"
    colour = "#c7a6ff" if cameras else "#9fb6cf"
    if not visible:
        return {"type": "scatter", "x": [], "y": [], "mode": "markers", "name": name, "visible": False}
    xy, ids = geom.dev_xy[sel], geom.dev_ids[sel]
    x, y, n = aggregate_points(xy, box)
    if len(n) and n.max() > 1:  # aggregated
        return {"type": "scatter", "mode": "markers+text", "name": name, "visible": True,
                "x": np.round(x, 5).tolist(), "y": np.round(y, 5).tolist(),
                "text": [str(c) if c > 1 else "" for c in n.tolist()],
                "textfont": {"size": 9, "color": BG},
                "marker": {"size": np.clip(6 + 3 * np.sqrt(n), 6, 26).round(1).tolist(), "color": colour,
                           "opacity": 0.75, "symbol": "triangle-up" if cameras else "circle"},
                "hovertemplate": "%{text} " + name + "<extra></extra>"}
    x0, y0, x1, y1 = box
    inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
    ids = ids[inside].tolist()
    return {"type": "scatter", "mode": "markers", "name": name, "visible": True,
            "x": np.round(x, 5).tolist(), "y": np.round(y, 5).tolist(), "customdata": ids,
            "marker": {"size": 7, "symbol": "triangle-up" if cameras else "circle",
                       "color": ["#ff3b5c" if i in offline else colour for i in ids], "opacity": 0.9},
            "hovertemplate": "%{customdata}<extra></extra>"}


def _inside(loc, box: tuple[float, float, float, float]) -> bool:
    return bool(loc) and box[0] <= loc[0] <= box[2] and box[1] <= loc[1] <= box[3]


def unit_trace(units: list[dict], visible: bool = True, box: tuple[float, float, float, float] | None = None,
               scale: float = 1.0) -> dict:
    pts = [u for u in units if u.get("location") and (box is None or _inside(u["location"], box))]
    return {"type": "scatter", "mode": "markers", "name": "units", "visible": visible,
            "x": [u["location"][0] for u in pts], "y": [u["location"][1] for u in pts],
            "customdata": [u["id"] for u in pts],
            "text": [f"{u['id']} ({u.get('type', '')}): {u.get('state', '?')}" for u in pts],
            "marker": {"size": round(10 * scale, 1), "symbol": "square", "line": {"color": BG, "width": 1.5},
                       "color": [UNIT_COLOUR.get(u.get("state", ""), "#888") for u in pts]},
            "hovertemplate": "%{text}<extra></extra>"}


def incident_trace(incidents: list[Incident], selected: str | None = None, scale: float = 1.0) -> dict:
    return {"type": "scatter", "mode": "markers", "name": "incidents",
            "x": [i.location[0] for i in incidents], "y": [i.location[1] for i in incidents],
            "customdata": [i.id for i in incidents],
            "text": [f"{i.id} {i.event} ({i.severity}, {i.state})" for i in incidents],
            "marker": {"size": [round((SEVERITY_SIZE.get(i.severity, 12) + (8 if i.id == selected else 0)) * scale, 1)
                                for i in incidents],
                       "color": [SEVERITY_COLOUR.get(i.severity, "#ccc") for i in incidents],
                       "symbol": ["diamond" if i.state == "escalated" else "circle" for i in incidents],
                       "line": {"color": ["#ffffff" if i.id == selected else BG for i in incidents], "width": 2}},
            "hovertemplate": "%{text}<extra>click for detail</extra>"}


def view_box(geom: MapGeometry, relayout: dict | None) -> tuple[float, float, float, float]:
    """The visible lon/lat box: the view's bounds unless the user zoomed or panned."""
    x0, y0, x1, y1 = geom.bounds
    r = relayout or {}
    try:
        if "xaxis.range[0]" in r:
            x0, x1 = float(r["xaxis.range[0]"]), float(r["xaxis.range[1]"])
        if "yaxis.range[0]" in r:
            y0, y1 = float(r["yaxis.range[0]"]), float(r["yaxis.range[1]"])
    except (TypeError, ValueError):
        pass
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


@dataclass(frozen=True)
class Layers:
    """What the operator chose to see, and where."""

    sensors: bool = False
    cameras: bool = False
    units: bool = True
    incidents: bool = True
    box: tuple[float, float, float, float] | None = None
    selected: str | None = None
    label_size: int | None = None
    scale: float = 1.0  # marker sizes: >1 on a 4K wall, where the same pixels look half as big


def dynamic_traces(geom: MapGeometry, rm: risk.RiskMap, incidents: list[Incident], units: list[dict],
                   offline: frozenset[str], layers: Layers) -> dict[int, dict]:
    """Trace index -> trace for everything that changes between updates."""
    box = layers.box or geom.bounds
    gset = set(geom.grids)
    here = [i for i in incidents if i.area in gset] if geom.area else incidents
    x0, y0, x1, y1 = geom.bounds
    near = (x0 - (x1 - x0) * 0.05, y0 - (y1 - y0) * 0.05, x1 + (x1 - x0) * 0.05, y1 + (y1 - y0) * 0.05)
    out = dict(zip(T_RISK, risk_traces(geom, rm)))
    out[T_DEVICES] = device_trace(geom, box, False, offline, layers.sensors)
    out[T_CAMERAS] = device_trace(geom, box, True, offline, layers.cameras)
    out[T_UNITS] = unit_trace(units, layers.units, near if geom.area else None, layers.scale)
    inc = incident_trace(here, layers.selected, layers.scale)
    inc["visible"] = layers.incidents
    out[T_INCIDENTS] = inc
    out[T_LABELS] = label_trace(geom, rm, layers.label_size)
    return out


def map_layout(geom: MapGeometry, height: int | None = None) -> dict:
    x0, y0, x1, y1 = geom.bounds
    px, py = (x1 - x0) * 0.03 + 1e-4, (y1 - y0) * 0.03 + 1e-4
    axis = {"visible": False, "showgrid": False, "zeroline": False, "fixedrange": False}
    lay = {
        "paper_bgcolor": BG, "plot_bgcolor": BG, "font": {"color": INK, "family": FONT},
        "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "showlegend": False, "dragmode": "pan",
        "hovermode": "closest", "uirevision": f"view:{geom.area}",
        "hoverlabel": {"font": {"size": 14, "family": FONT}},
        "xaxis": {**axis, "range": [x0 - px, x1 + px]},
        "yaxis": {**axis, "range": [y0 - py, y1 + py], "scaleanchor": "x", "scaleratio": round(geom.aspect, 6)},
    }
    if height:
        lay["height"] = height
    return lay


def map_figure(geom: MapGeometry, dynamic: dict[int, dict], height: int | None = None) -> dict:
    """The whole figure: static geometry plus the dynamic traces (first draw of a view)."""
    traces = static_traces(geom) + [dynamic[i] for i in DYNAMIC]
    return {"data": traces, "layout": map_layout(geom, height)}


# ---------------------------------------------------------------- charts


def _chart_layout(title: str, height: int) -> dict:
    return {
        "title": {"text": title, "font": {"size": 14}, "x": 0.01, "y": 0.95},
        "paper_bgcolor": PANEL, "plot_bgcolor": PANEL, "font": {"color": INK, "family": FONT, "size": 12},
        "margin": {"l": 48, "r": 12, "t": 34, "b": 30}, "height": height, "showlegend": False,
        "xaxis": {"gridcolor": "#22344d", "type": "date"}, "yaxis": {"gridcolor": "#22344d"},
    }


def _ms(t: float) -> float:
    return round(t * 1000.0)


def evidence_figure(device: str, unit: str, t: list[float], v: list[float], start: float, end: float,
                    limits: dict[str, float] | None = None, points: list[tuple[float, float]] | None = None,
                    height: int = 190, title: str = "") -> dict:
    """A sensor's window with the anomalous stretch [start, end] shaded and its limits drawn.

    ``points`` are the evidence readings themselves, drawn over the series (or alone when the
    time-series store has nothing for the window).
    """
    lay = _chart_layout(f"{title}{device} ({unit})" if unit else f"{title}{device}", height)
    lay["shapes"] = [{"type": "rect", "xref": "x", "yref": "paper", "x0": _ms(start), "x1": _ms(max(end, start + 1)),
                      "y0": 0, "y1": 1, "fillcolor": "rgba(255,59,92,0.22)", "line": {"width": 0}, "layer": "below"}]
    for name, val in (limits or {}).items():
        lay["shapes"].append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": val, "y1": val,
                              "line": {"color": "#ff8a3d" if name == "warning" else "#ff3b5c", "dash": "dash",
                                       "width": 1}})
    lo = min([start - 600.0, *t[:1]])  # some context before the stretch, even without a series
    hi = max([end + 120.0, *t[-1:]])
    lay["xaxis"].update(type="date", range=[_ms(lo), _ms(hi)])
    data = [{"type": "scatter", "mode": "lines", "x": [_ms(x) for x in t], "y": v, "name": device,
             "line": {"color": "#4aa3ff", "width": 2}}]
    if points:
        data.append({"type": "scatter", "mode": "markers", "x": [_ms(p[0]) for p in points],
                     "y": [p[1] for p in points], "name": "evidence",
                     "marker": {"color": "#ff3b5c", "size": 9, "line": {"color": INK, "width": 1}}})
    return {"data": data, "layout": lay}


def rejects_figure(by_reason: dict[str, int], height: int = 300) -> dict:
    """Rejected messages by reason, largest first."""
    items = sorted(by_reason.items(), key=lambda kv: -kv[1])[:15][::-1]
    lay = _chart_layout("Rejected messages by reason", height)
    lay["font"]["size"] = 14
    lay["xaxis"] = {"gridcolor": "#22344d", "title": {"text": "messages"}}
    lay["yaxis"] = {"automargin": True}
    lay["margin"]["l"] = 10
    if not items:
        lay["xaxis"]["visible"] = lay["yaxis"]["visible"] = False
        lay["annotations"] = [{"text": "No rejected messages", "showarrow": False, "font": {"size": 16, "color": MUTED},
                               "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}]
    return {"data": [{"type": "bar", "orientation": "h", "x": [v for _, v in items], "y": [k for k, _ in items],
                      "marker": {"color": "#ff8a3d"}, "text": [str(v) for _, v in items], "textposition": "auto"}],
            "layout": lay}
