"""The city model: governance areas, devices, units, loaded from a city file (CONTRACT §1).

The loader validates everything once and names the entry, field and (for YAML) line at fault.
Devices without an ``area`` are placed in the grid whose polygon contains them, vectorised
(:func:`citybrain.geo.assign_points`), so a 20,000-grid city loads in a few seconds.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from citybrain import geo
from citybrain.exceptions import CityFileError
from citybrain.vocab import AREA_LEVELS, CAMERA_KIND, SENSOR_KINDS, UNIT_ALIASES, UNIT_TYPES

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Area:
    id: str
    name: str
    level: str
    parent: str | None
    polygon: tuple[Point, ...]

    @property
    def centroid(self) -> Point:
        if not self.polygon:
            return (math.nan, math.nan)
        return geo.centroid(np.asarray(self.polygon))


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    unit: str
    location: Point
    area: str  # the grid
    district: str
    limits: tuple[tuple[str, float], ...] = ()
    zones: tuple[str, ...] = ()

    @property
    def is_camera(self) -> bool:
        return self.kind == CAMERA_KIND

    def limit(self, name: str) -> float | None:
        return dict(self.limits).get(name)


@dataclass(frozen=True, slots=True)
class Unit:
    id: str
    type: str
    base: Point
    name: str = ""


@dataclass(frozen=True)
class City:
    name: str
    timezone: str
    areas: dict[str, Area]
    devices: dict[str, Device]
    units: dict[str, Unit]
    _children: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ hierarchy

    def chain(self, area_id: str) -> list[Area]:
        """The area and its ancestors, nearest first (grid, community, street, district)."""
        out = []
        a: Area | None = self.areas.get(area_id)
        while a is not None:
            out.append(a)
            a = self.areas.get(a.parent) if a.parent else None
        return out

    def district_of(self, area_id: str) -> str:
        ch = self.chain(area_id)
        return ch[-1].id if ch else ""

    def ancestor(self, area_id: str, level: str) -> str | None:
        for a in self.chain(area_id):
            if a.level == level:
                return a.id
        return None

    def children(self, area_id: str | None) -> tuple[str, ...]:
        """Direct children (``None``: the districts)."""
        if area_id is None:
            return tuple(a.id for a in self.areas.values() if a.parent is None)
        return self._children.get(area_id, ())

    def by_level(self, level: str) -> list[Area]:
        return [a for a in self.areas.values() if a.level == level]

    @cached_property
    def grids(self) -> list[Area]:
        return self.by_level("grid")

    def grids_under(self, area_id: str) -> list[str]:
        """Every grid at or below an area."""
        out, todo = [], [area_id]
        while todo:
            a = todo.pop()
            if self.areas[a].level == "grid":
                out.append(a)
            else:
                todo.extend(self._children.get(a, ()))
        return out

    @cached_property
    def neighbours(self) -> dict[str, frozenset[str]]:
        """Grids whose bounding boxes touch or overlap (shared borders count)."""
        grids = self.grids
        if not grids:
            return {}
        boxes = np.array([[min(p[0] for p in g.polygon), min(p[1] for p in g.polygon),
                           max(p[0] for p in g.polygon), max(p[1] for p in g.polygon)] for g in grids])
        size = max(float(np.median(boxes[:, 2] - boxes[:, 0])), float(np.median(boxes[:, 3] - boxes[:, 1])), 1e-6)
        tol = size * 1e-3
        cells: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            for cx in range(int((x0 - tol) // size), int((x1 + tol) // size) + 1):
                for cy in range(int((y0 - tol) // size), int((y1 + tol) // size) + 1):
                    cells[(cx, cy)].append(i)
        out: dict[str, set[str]] = {g.id: set() for g in grids}
        for members in cells.values():
            for a in members:
                ax0, ay0, ax1, ay1 = boxes[a]
                for b in members:
                    if a < b:
                        bx0, by0, bx1, by1 = boxes[b]
                        if ax0 <= bx1 + tol and bx0 <= ax1 + tol and ay0 <= by1 + tol and by0 <= ay1 + tol:
                            out[grids[a].id].add(grids[b].id)
                            out[grids[b].id].add(grids[a].id)
        return {k: frozenset(v) for k, v in out.items()}

    # ------------------------------------------------------------------ places

    @cached_property
    def _grid_polys(self) -> tuple[list[str], list[np.ndarray]]:
        return [g.id for g in self.grids], [np.asarray(g.polygon, dtype=float) for g in self.grids]

    def grid_at(self, lon: float, lat: float) -> str | None:
        ids, polys = self._grid_polys
        idx = int(geo.assign_points(np.array([lon]), np.array([lat]), polys)[0])
        return ids[idx] if idx >= 0 else None

    def sensors(self) -> Iterable[Device]:
        return (d for d in self.devices.values() if not d.is_camera)

    def cameras(self) -> Iterable[Device]:
        return (d for d in self.devices.values() if d.is_camera)

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        pts = np.array([p for a in self.areas.values() for p in a.polygon] or [[0.0, 0.0]])
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


# ====================================================================== loading


class _LineDict(dict):
    line: int | None = None


class _LineLoader(yaml.SafeLoader):
    """YAML loader that remembers the line of every mapping, for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    d = _LineDict(loader.construct_mapping(node, deep=True))
    d.line = node.start_mark.line + 1
    return d


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_city(path: str | Path) -> City:
    """Load and validate a city file (YAML or JSON). Raises :class:`CityFileError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CityFileError(str(path), f"cannot read: {e.strerror}") from e
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            raw = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except (ValueError, yaml.YAMLError) as e:
        raise CityFileError(str(path), f"not valid YAML/JSON: {e}") from e
    return city_from_dict(raw)


def city_from_dict(raw: Any) -> City:
    if not isinstance(raw, dict):
        raise CityFileError("city file", "top level must be a mapping with name, areas, devices, units")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CityFileError("name", "must be a non-empty string")
    tz = raw.get("timezone") or "UTC"
    if not isinstance(tz, str):
        raise CityFileError("timezone", "must be a string such as Asia/Shanghai")
    areas = _load_areas(_list(raw, "areas"))
    children: dict[str, list[str]] = defaultdict(list)
    for a in areas.values():
        if a.parent:
            children[a.parent].append(a.id)
    city = City(name=name, timezone=tz, areas=areas, devices={}, units={},
                _children={k: tuple(v) for k, v in children.items()})
    devices = _load_devices(_list(raw, "devices"), city)
    units = _load_units(_list(raw, "units", required=False))
    city.devices.update(devices)
    city.units.update(units)
    return city


def _list(raw: dict, key: str, required: bool = True) -> list:
    v = raw.get(key)
    if v is None and not required:
        return []
    if not isinstance(v, list):
        raise CityFileError(key, "must be a list")
    return v


def _where(section: str, i: int, entry: Any, fld: str | None = None) -> str:
    ident = entry.get("id") if isinstance(entry, dict) else None
    s = f"{section}[{i}]"
    if ident:
        s += f" (id {ident!r})"
    line = getattr(entry, "line", None)
    if line:
        s += f" at line {line}"
    if fld:
        s += f", field {fld!r}"
    return s


def _point(v: Any, where: str) -> Point:
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        raise CityFileError(where, f"must be [lon, lat] numbers, got {v!r}")
    lon, lat = float(v[0]), float(v[1])
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        hint = " (swapped? the contract's order is [lon, lat])" if abs(lon) <= 90 < abs(lat) <= 180 else ""
        raise CityFileError(where, f"[{lon}, {lat}] is not a WGS84 [lon, lat] (lon in -180..180, lat in -90..90){hint}")
    return lon, lat


def _ident(entry: Any, section: str, i: int, seen: set[str]) -> str:
    if not isinstance(entry, dict):
        raise CityFileError(f"{section}[{i}]", "must be a mapping")
    ident = entry.get("id")
    if not isinstance(ident, str) or not ident.strip():
        raise CityFileError(_where(section, i, entry, "id"), "must be a non-empty string")
    if ident in seen:
        raise CityFileError(_where(section, i, entry, "id"), f"duplicate id {ident!r}")
    seen.add(ident)
    return ident


def _load_areas(items: list) -> dict[str, Area]:
    seen: set[str] = set()
    areas: dict[str, Area] = {}
    where_of: dict[str, str] = {}
    for i, e in enumerate(items):
        ident = _ident(e, "areas", i, seen)
        level = e.get("level")
        if level not in AREA_LEVELS:
            raise CityFileError(_where("areas", i, e, "level"), f"{level!r} is not one of {', '.join(AREA_LEVELS)}")
        parent = e.get("parent")
        if level == "district" and parent not in (None, ""):
            raise CityFileError(_where("areas", i, e, "parent"), "a district has no parent (null)")
        if level != "district" and not isinstance(parent, str):
            raise CityFileError(_where("areas", i, e, "parent"), f"a {level} needs a parent id")
        poly_raw = e.get("polygon")
        if poly_raw is None and level != "grid":
            poly: tuple[Point, ...] = ()
        else:
            if not isinstance(poly_raw, list) or len(poly_raw) < 3:
                raise CityFileError(_where("areas", i, e, "polygon"), "must be a list of at least 3 [lon, lat] points")
            poly = tuple(_point(p, _where("areas", i, e, f"polygon[{k}]")) for k, p in enumerate(poly_raw))
            if len(poly) > 3 and poly[0] == poly[-1]:
                poly = poly[:-1]  # closed ring written GeoJSON-style
        areas[ident] = Area(ident, str(e.get("name") or ident), level, parent or None, poly)
        where_of[ident] = _where("areas", i, e)
    # parents exist and are one level up; children lie inside parents
    up = {lvl: AREA_LEVELS[k - 1] for k, lvl in enumerate(AREA_LEVELS) if k}
    for a in areas.values():
        if a.parent is None:
            continue
        p = areas.get(a.parent)
        if p is None:
            raise CityFileError(where_of[a.id] + ", field 'parent'", f"unknown parent {a.parent!r}")
        if p.level != up[a.level]:
            raise CityFileError(where_of[a.id] + ", field 'parent'",
                                f"parent {p.id!r} is a {p.level}; a {a.level}'s parent must be a {up[a.level]}")
    _check_containment(areas, where_of)
    return areas


def _check_containment(areas: dict[str, Area], where_of: dict[str, str]) -> None:
    by_parent: dict[str, list[Area]] = defaultdict(list)
    for a in areas.values():
        if a.parent and a.polygon and areas[a.parent].polygon:
            by_parent[a.parent].append(a)
    for pid, kids in by_parent.items():
        ppoly = np.asarray(areas[pid].polygon)
        span = float(np.ptp(ppoly, axis=0).max()) or 1.0
        pts = np.array([p for k in kids for p in k.polygon])
        owner = np.repeat(np.arange(len(kids)), [len(k.polygon) for k in kids])
        ok = geo.points_in_polygon(pts[:, 0], pts[:, 1], ppoly, edge_tol=span * 1e-6)
        if not ok.all():
            bad = kids[int(owner[np.argmin(ok)])]
            pt = pts[int(np.argmin(ok))]
            raise CityFileError(where_of[bad.id] + ", field 'polygon'",
                                f"{bad.level} {bad.id!r} lies outside its parent {pid!r} (vertex [{pt[0]}, {pt[1]}])")


def _load_devices(items: list, city: City) -> dict[str, Device]:
    seen: set[str] = set()
    pending: list[tuple[int, Any, str, str, str, Point]] = []
    for i, e in enumerate(items):
        ident = _ident(e, "devices", i, seen)
        kind = e.get("kind")
        if not isinstance(kind, str) or not kind:
            raise CityFileError(_where("devices", i, e, "kind"), "must be a non-empty string")
        unit = e.get("unit")
        known = SENSOR_KINDS.get(kind)
        if unit is None:
            unit = known.unit if known else ""
        if not isinstance(unit, str):
            raise CityFileError(_where("devices", i, e, "unit"), "must be a string")
        unit = UNIT_ALIASES.get(unit, unit)
        if known and unit != known.unit:
            raise CityFileError(_where("devices", i, e, "unit"), f"{unit!r} does not fit kind {kind!r}, which is measured in {known.unit!r}")
        loc = _point(e.get("location"), _where("devices", i, e, "location"))
        pending.append((i, e, ident, kind, unit, loc))
    # place devices without an area, all at once
    need = [p for p in pending if not p[1].get("area")]
    ids, polys = city._grid_polys
    placed: dict[str, str] = {}
    if need:
        idx = geo.assign_points(np.array([p[5][0] for p in need]), np.array([p[5][1] for p in need]), polys)
        for p, k in zip(need, idx):
            if k < 0:
                raise CityFileError(_where("devices", p[0], p[1], "location"),
                                    f"{list(p[5])} is outside every grid; give an 'area' or move the device")
            placed[p[2]] = ids[int(k)]
    out: dict[str, Device] = {}
    for i, e, ident, kind, unit, loc in pending:
        area = e.get("area") or placed[ident]
        a = city.areas.get(area)
        if a is None:
            raise CityFileError(_where("devices", i, e, "area"), f"unknown area {area!r}")
        if a.level != "grid":
            raise CityFileError(_where("devices", i, e, "area"), f"{area!r} is a {a.level}; a device belongs to a grid")
        limits = e.get("limits") or {}
        if not isinstance(limits, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in limits.values()
        ):
            raise CityFileError(_where("devices", i, e, "limits"), "must map names (warning, alarm) to numbers")
        zones = e.get("zones") or []
        if not isinstance(zones, list) or not all(isinstance(z, str) for z in zones):
            raise CityFileError(_where("devices", i, e, "zones"), "must be a list of zone names")
        out[ident] = Device(ident, kind, unit, loc, area, city.district_of(area),
                            tuple((str(k), float(v)) for k, v in limits.items()), tuple(zones))
    return out


def _load_units(items: list) -> dict[str, Unit]:
    seen: set[str] = set()
    out: dict[str, Unit] = {}
    for i, e in enumerate(items):
        ident = _ident(e, "units", i, seen)
        typ = e.get("type")
        if typ not in UNIT_TYPES:
            raise CityFileError(_where("units", i, e, "type"), f"{typ!r} is not one of {', '.join(UNIT_TYPES)}")
        base = _point(e.get("base"), _where("units", i, e, "base"))
        out[ident] = Unit(ident, typ, base, str(e.get("name") or ident))
    return out
