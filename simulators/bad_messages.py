"""Malformed device traffic: one message for every way ingest refuses one, with the reason it must give.

For the ingest tests (every message dead-lettered with exactly this reason) and for
``bench/bench_ingest.py --bad-share`` (good traffic's rate with this mixed in). The messages are
built for a given city from its own first water-level sensor, another sensor, a camera and a
unit, so the reasons are the specific ones (a wrong unit, a mismatched device) and not all
"unknown_device".
"""

from __future__ import annotations

import json
from typing import NamedTuple

from citybrain.city import City


class BadMessage(NamedTuple):
    topic: str
    payload: bytes
    reason: str  # the dead-letter reason ingest must give (CONTRACT.md's reason codes)


def corpus(city: City, now: float) -> list[BadMessage]:
    """46 bad messages for ``city`` at wall time ``now`` (times in them are relative to it)."""
    sensors = list(city.sensors())
    wl = next(d for d in sensors if d.kind == "water_level")
    other = next(d for d in sensors if d.id != wl.id and d.kind != "water_level")
    cam_id = next(d.id for d in city.devices.values() if d.kind == "camera")
    unit = next(iter(city.units))
    ok = {"bn": f"{wl.id}:", "n": "water_level", "u": wl.unit, "v": 1.0}
    cam = {"id": "e1", "camera": cam_id, "label": "fire", "score": 0.5, "top_score": 0.5, "start_time": now,
           "end_time": None, "current_zones": [], "box": []}

    def s(d) -> bytes:
        return json.dumps(d).encode()

    def sensor(**kw) -> bytes:
        return s([{**ok, "bt": now, **kw}])

    def camev(typ="new", **kw) -> bytes:
        return s({"type": typ, "before": {}, "after": {**cam, **kw}})

    W = f"city/sensors/{wl.id}"
    C = f"city/cameras/{cam_id}/events"
    U = f"city/units/{unit}/status"
    unit_ok = {"state": "available", "incident": None, "location": [114.0, 22.5], "t": now}
    bn = f'"bn":"{wl.id}:","n":"water_level"'.encode()
    rows = [
        (W, b"{not json", "bad_json"), (W, b"\xff\xfe", "bad_json"), (W, b"", "bad_json"),
        (W, b"x" * 70000, "oversize"), (W, b"{}", "bad_senml"), (W, b"[]", "bad_senml"), (W, b"[1,2]", "bad_senml"),
        (W, sensor(v="1.0"), "wrong_type"), (W, sensor(v=True), "wrong_type"), (W, sensor(bt="now"), "wrong_type"),
        (W, b"[{" + bn + b',"v":NaN}]', "nan_value"),
        (W, b"[{" + bn + b',"v":Infinity}]', "nan_value"),
        (W, sensor(u="furlong"), "unit_mismatch"), (W, sensor(bn=f"{other.id}:"), "device_mismatch"),
        (W, sensor(n="rainfall"), "unexpected_measurement"),
        (W, s([{"bn": f"{wl.id}:", "n": "water_level", "bt": now, "vs": "high"}]), "non_numeric_value"),
        (W, sensor(bt=now + 3600), "future_time"), (W, sensor(bt=now - 40 * 86400), "too_old"),
        (W, s([{**ok, "bt": now}, {"v": 1, "vs": "x"}]), "bad_senml"), (W, s([{"bn": f"{wl.id}:"}]), "bad_senml"),
        ("city/sensors/nope-1", sensor(bn="nope-1:"), "unknown_device"),
        (f"city/sensors/{cam_id}", sensor(bn=f"{cam_id}:"), "wrong_device_kind"),
        ("city/elsewhere/x", b"1", "unknown_topic"), (f"city/sensors/{wl.id}/extra", b"1", "unknown_topic"),
        (C, b"[1]", "bad_camera_event"), (C, camev("blink"), "bad_camera_event"),
        (C, s({"type": "new", "after": None}), "bad_camera_event"), (C, camev(score=1.5), "bad_camera_event"),
        (C, camev(score="high"), "wrong_type"), (C, camev(camera="cam-9"), "device_mismatch"),
        (C, camev(label=""), "bad_camera_event"), (C, camev("end"), "bad_camera_event"),
        (C, camev(start_time=now + 9999), "future_time"), (C, camev(current_zones="gate"), "wrong_type"),
        (C, camev(score=2.0, recognized_license_plate="粤B99999", sub_label=["Zhang Wei", 0.9]), "bad_camera_event"),
        (f"city/cameras/{wl.id}/events", camev(camera=wl.id), "wrong_device_kind"),
        (f"city/cameras/{cam_id}/person", b"many", "bad_count"), (f"city/cameras/{cam_id}/car", b"-3", "bad_count"),
        (f"city/devices/{wl.id}/status", b"sleepy", "bad_presence"),
        ("city/devices/ghost/status", b"online", "unknown_device"),
        (U, s({**unit_ok, "state": "flying"}), "bad_unit_status"), (U, b"[]", "bad_unit_status"),
        (U, s({**unit_ok, "location": [500, 1]}), "bad_coordinates"), (U, s({**unit_ok, "location": "here"}), "wrong_type"),
        (U, s({**unit_ok, "t": "later"}), "wrong_type"), ("city/units/NAVY-1/status", s(unit_ok), "unknown_unit"),
    ]
    return [BadMessage(*r) for r in rows]
