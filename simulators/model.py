"""What a normal city looks like, per sensor kind: level, daily/weekly rhythm, noise.

Values stay well inside the devices' warning limits so a normal day raises no alarm; rush
hours, night-time quiet and evening power peaks follow the local clock of the city.
"""

from __future__ import annotations

import math

#: kind -> (base, daily amplitude, noise sd, rhythm name)
NORMAL = {
    "water_level": (1.0, 0.15, 0.02, "flat"),
    "rainfall": (1.0, 0.8, 0.3, "flat"),
    "pm25": (35.0, 10.0, 3.0, "traffic"),
    "noise": (55.0, 10.0, 2.0, "traffic"),
    "temperature": (25.0, 4.0, 0.3, "sun"),
    "smoke": (5.0, 2.0, 1.0, "flat"),
    "gas": (0.5, 0.2, 0.1, "flat"),
    "traffic_speed": (45.0, -15.0, 3.0, "traffic"),
    "traffic_flow": (900.0, 700.0, 60.0, "traffic"),
    "occupancy": (20.0, 15.0, 2.0, "traffic"),
    "power": (300.0, 150.0, 10.0, "evening"),
    "vibration": (1.0, 0.5, 0.2, "traffic"),
}
GENERIC = (10.0, 2.0, 0.5, "flat")
CADENCE_S = {"water_level": 60, "rainfall": 60, "traffic_speed": 30, "traffic_flow": 30, "occupancy": 30}
DEFAULT_CADENCE_S = 60
UTC_OFFSET_H = 8.0  # Asia/Shanghai


def rhythm(name: str, t: float) -> float:
    """A 0..1 activity factor at event time t (local time of the city)."""
    hour = ((t / 3600.0) + UTC_OFFSET_H) % 24
    weekday = int(((t / 86400.0) + UTC_OFFSET_H / 24 + 3) % 7)  # 0 = Monday
    if name == "traffic":
        rush = math.exp(-((hour - 8.5) ** 2) / 2) + math.exp(-((hour - 18.0) ** 2) / 2)
        night = 0.1 if hour < 5 else 0.4
        return min(1.0, night + rush * (0.6 if weekday >= 5 else 1.0))
    if name == "sun":
        return max(0.0, math.sin(math.pi * (hour - 6) / 12))
    if name == "evening":
        return 0.3 + 0.7 * math.exp(-((hour - 20.0) ** 2) / 6)
    return 0.5


def normal_value(kind: str, t: float, noise: float) -> float:
    base, amp, sd, name = NORMAL.get(kind, GENERIC)
    v = base + amp * (rhythm(name, t) - 0.5) * 2 + sd * noise
    return max(0.0, v) if kind != "temperature" else v
