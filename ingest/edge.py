"""The edge: one MQTT message in, typed records out, or a :class:`RejectedMessage` with a reason.

Everything the outside world sends is validated here, once (CONTRACT section 2): topic shape,
size, JSON, types, NaN/Inf, known device of the right kind, unit, event-time horizon, and
duplicates. Downstream stages trust the records they get.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from citybrain.city import City, Device
from citybrain.clock import Clock, WallClock
from citybrain.exceptions import RejectedMessage
from citybrain.records import CameraCount, CameraEvent, Presence, Reading, Record, UnitStatus
from citybrain.settings import Settings
from citybrain.vocab import UNIT_ALIASES, UNIT_STATES
from ingest.senml import resolve_senml

#: MQTT subscription of ingest: everything under city/, so a message on a wrong topic is kept and
#: counted too; what citybrain itself publishes (alerts, dispatches) is recognised and skipped.
INPUT_TOPICS = ("city/#",)
OUTGOING = (("alerts",), ("units", "dispatch"))
FRIGATE_TYPES = ("new", "update", "end")
PRIVATE_ATTRIBUTES = ("sub_label", "recognized_license_plate", "plate", "face")
# "key": "value" or "key": [...] of a private attribute in a payload that is not valid JSON
_PRIVATE_PATTERN = re.compile(rb'("(?:' + "|".join(PRIVATE_ATTRIBUTES).encode() + rb')"\s*:\s*)("(?:[^"\\]|\\.)*"?|\[[^\]]*\]?)')


#: orjson gives what the stdlib gives for every JSON it accepts, but for two cases the stdlib sees
#: otherwise: an integer beyond 64 bits (orjson: a float; the stdlib: an int) and nesting the
#: stdlib refuses (RecursionError past ~1,000 levels less the caller's stack; orjson: 1,024
#: levels). A payload that might hold either (a run of 19 digits; 512 brackets) is left to the
#: stdlib, as is everything orjson refuses (NaN, Infinity, lone surrogates, BOMs, UTF-16/32, bad
#: JSON: the stdlib's errors are the reasons kept).
_DIGIT, _OPEN = ord("0"), ord("[")
_SHAPE = bytes(_DIGIT if b in b"0123456789" else _OPEN if b in b"[{" else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19
_DEEP = 512


def loads(payload: bytes):
    """``json.loads(payload)``: the same value or the same exception, faster (orjson) when it can."""
    shape = payload.translate(_SHAPE)
    if _LONG_NUMBER not in shape and (len(payload) < 2 * _DEEP or shape.count(_OPEN) < _DEEP):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            pass
    return json.loads(payload)


class RecentIds:
    """A bounded set of recently seen message identities (oldest forgotten first)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, key: str) -> bool:
        """True if ``key`` was seen before; remembers it either way."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return True
        self._ids[key] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False


@dataclass(frozen=True, slots=True)
class Parsed:
    records: tuple[Record, ...]
    duplicates: int = 0
    #: the readings' ``Reading.id`` in record order (sensor packs), computed once for de-duplication
    ids: tuple[str, ...] = ()


class Edge:
    """Validates messages against the city and the time horizon."""

    def __init__(self, city: City, settings: Settings, clock: Clock | None = None, privacy_key: bytes = b"") -> None:
        self.city = city
        self.settings = settings
        self.clock = clock or WallClock()
        self.recent = RecentIds()
        self.privacy_key = privacy_key or hashlib.sha256(b"citybrain:" + settings.admin_token.get().encode()).digest()

    # ------------------------------------------------------------------ entry

    def parse(self, topic: str, payload: bytes) -> Parsed:
        if len(payload) > self.settings.max_payload_bytes:
            raise RejectedMessage("oversize", f"{len(payload)} bytes > limit {self.settings.max_payload_bytes}")
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != "city":
            raise RejectedMessage("unknown_topic", f"topic {topic!r} is not an input topic")
        kind, ident = parts[1], parts[2]
        if (kind,) in OUTGOING or (kind, parts[-1]) in OUTGOING and len(parts) == 4:
            return Parsed(())  # our own output, not input
        if kind == "sensors" and len(parts) == 3:
            return self._sensor(ident, payload)
        if kind == "cameras" and len(parts) == 4:
            return self._camera_event(ident, payload) if parts[3] == "events" else self._camera_count(ident, parts[3], payload)
        if kind == "devices" and len(parts) == 4 and parts[3] == "status":
            return Parsed((self._presence(ident, payload),))
        if kind == "units" and len(parts) == 4 and parts[3] == "status":
            return Parsed((self._unit_status(ident, payload),))
        raise RejectedMessage("unknown_topic", f"topic {topic!r} is not an input topic")

    # ------------------------------------------------------------------ helpers

    def _device(self, ident: str, camera: bool | None = None) -> Device:
        d = self.city.devices.get(ident)
        if d is None:
            raise RejectedMessage("unknown_device", f"device {ident!r} is not in the city file", ident)
        if camera is True and not d.is_camera:
            raise RejectedMessage("wrong_device_kind", f"{ident!r} is a {d.kind} sensor, not a camera", ident)
        if camera is False and d.is_camera:
            raise RejectedMessage("wrong_device_kind", f"{ident!r} is a camera, not a sensor", ident)
        return d

    def _time(self, t: float, device: str | None) -> float:
        now = self.clock.now()
        if t > now + self.settings.future_skew_s:
            raise RejectedMessage("future_time", f"event time {t:.0f} is {t - now:.0f} s ahead of the clock", device)
        if t < now - self.settings.max_age_s:
            raise RejectedMessage("too_old", f"event time {t:.0f} is {(now - t) / 86400:.1f} days old", device)
        return t

    @staticmethod
    def _json(payload: bytes, device: str | None):
        try:
            return loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise RejectedMessage("bad_json", f"not JSON: {e}", device) from None

    # ------------------------------------------------------------------ sensors

    def _sensor(self, ident: str, payload: bytes) -> Parsed:
        dev = self._device(ident, camera=False)
        try:
            resolved = resolve_senml(self._json(payload, ident), self.clock.now())
        except RejectedMessage as e:
            raise RejectedMessage(e.reason, e.detail, ident) from None
        out: list[Record] = []
        ids: list[str] = []
        dups = 0
        prefix = ident + ":"
        for r in resolved:
            name = r["n"]
            if name.startswith(prefix):
                quantity = name[len(prefix):] or dev.kind
            elif name in (ident, dev.kind):  # the topic already names the device; bn may be left out
                quantity = dev.kind
            else:
                raise RejectedMessage("device_mismatch", f"record name {name!r} is not of device {ident!r} (topic)", ident)
            if quantity != dev.kind:
                raise RejectedMessage("unexpected_measurement", f"{ident!r} is a {dev.kind} sensor, got {quantity!r}", ident)
            unit = r.get("u")
            if unit is not None and UNIT_ALIASES.get(unit, unit) != dev.unit:
                raise RejectedMessage("unit_mismatch", f"{ident!r} reports {dev.unit!r}, got {unit!r}", ident)
            if "v" not in r:
                raise RejectedMessage("non_numeric_value", f"{ident!r} needs a numeric 'v'", ident)
            t = self._time(r["t"], ident)
            reading = Reading(device=ident, name=quantity, t=t, value=r["v"], unit=dev.unit, grid=dev.area)
            rid = reading.id
            if self.recent.seen(rid):
                dups += 1
                continue
            out.append(reading)
            ids.append(rid)
        if not out:
            raise RejectedMessage("duplicate", f"every reading of {ident!r} was already received", ident)
        return Parsed(tuple(out), dups, tuple(ids))

    # ------------------------------------------------------------------ cameras

    def _camera_event(self, ident: str, payload: bytes) -> Parsed:
        cam = self._device(ident, camera=True)
        msg = self._json(payload, ident)
        if not isinstance(msg, dict):
            raise RejectedMessage("bad_camera_event", "a camera event is a JSON object", ident)
        phase = msg.get("type")
        if phase not in FRIGATE_TYPES:
            raise RejectedMessage("bad_camera_event", f"'type' must be one of {FRIGATE_TYPES}, got {phase!r}", ident)
        after = msg.get("after")
        if not isinstance(after, dict):
            raise RejectedMessage("bad_camera_event", "'after' must be an object", ident)
        if after.get("camera", ident) != ident:
            raise RejectedMessage("device_mismatch", f"event of camera {after.get('camera')!r} on topic of {ident!r}", ident)
        oid, label = after.get("id"), after.get("label")
        if not isinstance(oid, str) or not oid or not isinstance(label, str) or not label:
            raise RejectedMessage("bad_camera_event", "'after.id' and 'after.label' must be non-empty strings", ident)
        score = self._unit_interval(after, "score", ident)
        top = self._unit_interval(after, "top_score", ident, default=score)
        start = self._finite(after, "start_time", ident)
        end = after.get("end_time")
        end = None if end is None else self._finite(after, "end_time", ident)
        if phase == "end" and end is None:
            raise RejectedMessage("bad_camera_event", "an 'end' event needs 'after.end_time'", ident)
        frame = after.get("frame_time")
        t = end if end is not None else (self._finite(after, "frame_time", ident) if frame is not None else start)
        zones = after.get("current_zones") or []
        box = after.get("box") or []
        if not isinstance(zones, list) or not all(isinstance(z, str) for z in zones):
            raise RejectedMessage("wrong_type", "'after.current_zones' must be a list of strings", ident)
        if not isinstance(box, list) or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in box):
            raise RejectedMessage("wrong_type", "'after.box' must be a list of numbers", ident)
        ev = CameraEvent(camera=ident, phase=phase, object_id=oid, label=label, score=score, top_score=top,
                         t=self._time(t, ident), start_time=start, end_time=end, zones=tuple(zones),
                         box=tuple(float(b) for b in box), grid=cam.area, attributes=self._private(after))
        if self.recent.seen(ev.id):
            raise RejectedMessage("duplicate", f"camera event {oid}/{phase} already received", ident)
        return Parsed((ev,))

    def _hash(self, value: str) -> str:
        return "h:" + hmac.new(self.privacy_key, value.encode(), hashlib.sha256).hexdigest()[:16]

    def _hash_value(self, v: object) -> str:
        """As accepted events hash it: a string, or the first of a [value, score] list."""
        if isinstance(v, list) and v and isinstance(v[0], str):
            v = v[0]
        return self._hash(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))

    def scrub(self, payload: bytes) -> bytes:
        """The payload with every licence plate and face id replaced by its keyed hash.

        For what is kept of a rejected message (dead-letter topic and file, the screen's recent
        rejects): bad input is kept with its reason, but never a plate in clear. JSON is scrubbed
        structurally; anything else by pattern.
        """
        if not any(k.encode() in payload for k in PRIVATE_ATTRIBUTES):
            return payload
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return _PRIVATE_PATTERN.sub(lambda m: m.group(1) + b'"' + self._hash(
                m.group(2).decode("utf-8", "replace").strip('"')).encode() + b'"', payload)

        def walk(node):
            if isinstance(node, dict):
                return {k: (self._hash_value(v) if k in PRIVATE_ATTRIBUTES and v else walk(v)) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            return node

        return json.dumps(walk(doc), ensure_ascii=False, separators=(",", ":")).encode()

    def _private(self, after: dict) -> tuple[tuple[str, str], ...]:
        """Licence plates and face ids are kept only as keyed hashes (never in clear)."""
        out = []
        for key in PRIVATE_ATTRIBUTES:
            v = after.get(key)
            if isinstance(v, list) and v:
                v = v[0]
            if isinstance(v, str) and v:
                out.append((key, self._hash_value(v)))
        return tuple(out)

    def _camera_count(self, ident: str, label: str, payload: bytes) -> Parsed:
        cam = self._device(ident, camera=True)
        try:
            text = payload.decode().strip()
            count = int(text)
        except (UnicodeDecodeError, ValueError):
            raise RejectedMessage("bad_count", f"count of {label!r} must be an integer, got {payload[:40]!r}", ident) from None
        if count < 0:
            raise RejectedMessage("bad_count", f"count of {label!r} is negative ({count})", ident)
        return Parsed((CameraCount(camera=ident, label=label, count=count, t=self.clock.now(), grid=cam.area),))

    def _presence(self, ident: str, payload: bytes) -> Presence:
        dev = self._device(ident)
        text = payload.decode("utf-8", "replace").strip().lower()
        if text not in ("online", "offline"):
            raise RejectedMessage("bad_presence", f"presence must be 'online' or 'offline', got {text[:40]!r}", ident)
        return Presence(device=ident, online=text == "online", t=self.clock.now(), grid=dev.area)

    def _unit_status(self, ident: str, payload: bytes) -> UnitStatus:
        if ident not in self.city.units:
            raise RejectedMessage("unknown_unit", f"unit {ident!r} is not in the city file", ident)
        msg = self._json(payload, ident)
        if not isinstance(msg, dict):
            raise RejectedMessage("bad_unit_status", "a unit status is a JSON object", ident)
        state = msg.get("state")
        if state not in UNIT_STATES:
            raise RejectedMessage("bad_unit_status", f"'state' must be one of {UNIT_STATES}, got {state!r}", ident)
        inc = msg.get("incident")
        if inc is not None and not isinstance(inc, str):
            raise RejectedMessage("wrong_type", "'incident' must be a string or null", ident)
        loc = msg.get("location")
        if loc is not None:
            if not (isinstance(loc, list) and len(loc) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in loc)):
                raise RejectedMessage("wrong_type", "'location' must be [lon, lat]", ident)
            if not all(math.isfinite(x) for x in loc) or not (-180 <= loc[0] <= 180 and -90 <= loc[1] <= 90):
                raise RejectedMessage("bad_coordinates", f"'location' {loc} is not WGS84 [lon, lat]", ident)
            loc = (float(loc[0]), float(loc[1]))
        t = self._time(self._finite(msg, "t", ident, default=self.clock.now()), ident)
        return UnitStatus(unit=ident, state=state, incident=inc, location=loc, t=t)

    @staticmethod
    def _finite(d: dict, key: str, device: str, default: float | None = None) -> float:
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RejectedMessage("wrong_type", f"{key!r} must be a number, got {type(v).__name__}", device)
        if not math.isfinite(v):
            raise RejectedMessage("nan_value", f"{key!r} is {v}", device)
        return float(v)

    def _unit_interval(self, d: dict, key: str, device: str, default: float | None = None) -> float:
        v = self._finite(d, key, device, default)
        if not 0.0 <= v <= 1.0:
            raise RejectedMessage("bad_camera_event", f"{key!r} must be in [0, 1], got {v}", device)
        return v
