"""Which city event a finding is evidence for (the contract's ``event`` vocabulary).

One table, read by fusion: a learned deviation of a water level is evidence of a flood, a stuck
value is evidence of a broken sensor, a camera's ``smoke`` label is evidence of a fire.
"""

from __future__ import annotations

from citybrain.vocab import CAMERA_LABELS_EVENT
from streams.detectors.base import Finding
from streams.monitor import SILENCE

KIND_EVENT: dict[str, str] = {
    "water_level": "flood",
    "rainfall": "flood",
    "pm25": "air_pollution",
    "noise": "noise",
    "temperature": "fire",
    "smoke": "fire",
    "gas": "gas_leak",
    "traffic_speed": "traffic_jam",
    "traffic_flow": "traffic_jam",
    "occupancy": "traffic_jam",
    "power": "power_outage",
}
COUNT_EVENT: dict[str, str] = {"person": "crowd_surge", "car": "traffic_jam"}
FAULT_DETECTORS = frozenset({"range", "flatline"})


def event_of(f: Finding) -> str:
    if f.detector in FAULT_DETECTORS:
        return "sensor_fault"
    if f.detector == SILENCE or f.detector == "presence":
        return "device_offline"
    if f.detector.startswith("camera_"):
        return CAMERA_LABELS_EVENT.get(f.detector.removeprefix("camera_"), "anomaly")
    if f.detector.startswith("counts_"):
        return COUNT_EVENT.get(f.detector.removeprefix("counts_"), "anomaly")
    return KIND_EVENT.get(f.source_kind, "anomaly")
