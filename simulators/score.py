"""Score a run: the incidents the system raised against the scenarios' ground truth."""

from __future__ import annotations

from citybrain.city import City


def score(truth: list[dict], incidents: list[dict], city: City | None, device_hours: float) -> dict:
    """Per truth event: found (same event, right or neighbouring grid, in time), delay; false incidents."""
    used: set[str] = set()
    rows = []
    for tr in truth:
        near = {tr["grid"]} | (set(city.neighbours.get(tr["grid"], ())) if city else set())
        match = None
        for inc in sorted(incidents, key=lambda i: i.get("started_at", 0)):
            if inc["id"] in used or inc.get("event") != tr["event"]:
                continue
            if inc.get("area") in near and tr["start"] - 120 <= inc.get("started_at", 0) <= tr["end"] + 300:
                match = inc
                break
        if match:
            used.add(match["id"])
        rows.append({"scenario": tr.get("scenario", tr["event"]), "event": tr["event"], "grid": tr["grid"],
                     "found": match is not None, "incident": match["id"] if match else None,
                     "right_grid": bool(match and match["area"] == tr["grid"]),
                     "delay_s": round(match["started_at"] - tr["start"], 1) if match else None,
                     "detect_delay_s": round(match["detected_at"] - tr["start"], 1) if match else None})
    false = [i for i in incidents if i["id"] not in used and i.get("event") not in ("device_offline", "sensor_fault")]
    return {"events": rows, "found": sum(r["found"] for r in rows), "missed": sum(not r["found"] for r in rows),
            "false_incidents": len(false), "false_ids": [i["id"] for i in false],
            "false_per_1000_device_hours": round(1000 * len(false) / device_hours, 3) if device_hours else None}


def table(result: dict) -> str:
    lines = [f"{'scenario':<16}{'event':<15}{'found':<7}{'grid':<7}{'delay s':>9}"]
    for r in result["events"]:
        lines.append(f"{r['scenario']:<16}{r['event']:<15}{'yes' if r['found'] else 'NO':<7}"
                     f"{('exact' if r['right_grid'] else 'near') if r['found'] else '-':<7}"
                     f"{r['delay_s'] if r['delay_s'] is not None else '-':>9}")
    lines.append(f"found {result['found']}, missed {result['missed']}, false incidents {result['false_incidents']}"
                 f" ({result['false_per_1000_device_hours']} per 1,000 device-hours)")
    return "\n".join(lines)
