"""The shared vocabulary: sensor kinds, events, incident states, CAP enumerations.

One table per concept, so ingest (units, physical ranges), streams (which detector applies),
alerts (CAP category, unit types) and the screen (labels) read the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SensorKind:
    name: str
    unit: str  # SenML / UCUM-style unit symbol the contract fixes
    low: float  # physical range: values outside it are a sensor fault, not a city event
    high: float
    label: str


SENSOR_KINDS: dict[str, SensorKind] = {
    k.name: k
    for k in (
        SensorKind("water_level", "m", -5.0, 50.0, "Water level"),
        SensorKind("rainfall", "mm/h", 0.0, 500.0, "Rainfall"),
        SensorKind("pm25", "ug/m3", 0.0, 2000.0, "PM2.5"),
        SensorKind("noise", "dBA", 0.0, 160.0, "Noise"),
        SensorKind("temperature", "Cel", -60.0, 1200.0, "Temperature"),
        SensorKind("smoke", "ppm", 0.0, 10000.0, "Smoke"),
        SensorKind("gas", "%LEL", 0.0, 100.0, "Gas"),
        SensorKind("traffic_speed", "km/h", 0.0, 250.0, "Traffic speed"),
        SensorKind("traffic_flow", "veh/h", 0.0, 20000.0, "Traffic flow"),
        SensorKind("occupancy", "%", 0.0, 100.0, "Occupancy"),
        SensorKind("power", "kW", 0.0, 1_000_000.0, "Power"),
        SensorKind("vibration", "mm/s", 0.0, 1000.0, "Vibration"),
    )
}

#: Unit aliases accepted at the edge and normalised to the contract's symbol.
UNIT_ALIASES: dict[str, str] = {
    "ug/m^3": "ug/m3",
    "µg/m3": "ug/m3",
    "dB": "dBA",
    "degC": "Cel",
    "°C": "Cel",
    "km/hr": "km/h",
}

CAMERA_KIND = "camera"

EVENTS: tuple[str, ...] = (
    "flood",
    "fire",
    "gas_leak",
    "air_pollution",
    "noise",
    "traffic_jam",
    "accident",
    "crowd_surge",
    "intrusion",
    "power_outage",
    "device_offline",
    "sensor_fault",
    "anomaly",
)

#: CAP 1.2 <category> for each event.
EVENT_CAP_CATEGORY: dict[str, str] = {
    "flood": "Met",
    "fire": "Fire",
    "gas_leak": "Safety",
    "air_pollution": "Env",
    "noise": "Env",
    "traffic_jam": "Transport",
    "accident": "Transport",
    "crowd_surge": "Safety",
    "intrusion": "Security",
    "power_outage": "Infra",
    "device_offline": "Infra",
    "sensor_fault": "Infra",
    "anomaly": "Other",
}

#: Unit types suited to each event, best first (dispatch suggestions).
EVENT_UNIT_TYPES: dict[str, tuple[str, ...]] = {
    "flood": ("rescue", "utility"),
    "fire": ("fire", "medical"),
    "gas_leak": ("fire", "utility"),
    "air_pollution": ("grid_worker", "utility"),
    "noise": ("police", "grid_worker"),
    "traffic_jam": ("police",),
    "accident": ("police", "medical", "rescue"),
    "crowd_surge": ("police", "medical"),
    "intrusion": ("police",),
    "power_outage": ("utility",),
    "device_offline": ("grid_worker",),
    "sensor_fault": ("grid_worker",),
    "anomaly": ("grid_worker",),
}

UNIT_TYPES: tuple[str, ...] = ("fire", "police", "medical", "rescue", "utility", "grid_worker")
UNIT_STATES: tuple[str, ...] = ("available", "en_route", "on_scene", "returning", "out_of_service")
AREA_LEVELS: tuple[str, ...] = ("district", "street", "community", "grid")

INCIDENT_STATES: tuple[str, ...] = (
    "new",
    "acknowledged",
    "dispatched",
    "on_scene",
    "resolved",
    "closed",
    "escalated",
    "false_alarm",
    "merged",
)
OPEN_STATES: frozenset[str] = frozenset({"new", "acknowledged", "dispatched", "on_scene", "escalated"})

#: CAP 1.2 enumerations, ordered from least to most.
CAP_SEVERITY: tuple[str, ...] = ("Unknown", "Minor", "Moderate", "Severe", "Extreme")
CAP_URGENCY: tuple[str, ...] = ("Unknown", "Past", "Future", "Expected", "Immediate")
CAP_CERTAINTY: tuple[str, ...] = ("Unknown", "Unlikely", "Possible", "Likely", "Observed")

CAMERA_LABELS_EVENT: dict[str, str] = {
    "fire": "fire",
    "smoke": "fire",
    "accident": "accident",
    "intrusion": "intrusion",
}


def severity_from_score(score: float) -> str:
    """Map a detector/fusion score in [0, 1] to a CAP severity."""
    if score >= 0.9:
        return "Extreme"
    if score >= 0.7:
        return "Severe"
    if score >= 0.4:
        return "Moderate"
    return "Minor"


def certainty_from_sources(n_sources: int, score: float) -> str:
    """More independent sources agreeing means more certainty (CAP terms)."""
    if n_sources >= 3 or (n_sources >= 2 and score >= 0.7):
        return "Observed"
    if n_sources >= 2 or score >= 0.8:
        return "Likely"
    return "Possible"
