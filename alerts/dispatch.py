"""Which unit to send: the nearest suitable available one, by estimated travel time."""

from __future__ import annotations

from citybrain.geo import haversine_m
from citybrain.vocab import EVENT_UNIT_TYPES

#: rough urban travel speeds (m/s) per unit type, for ETAs
SPEED_MPS = {"fire": 11.0, "police": 12.0, "medical": 11.0, "rescue": 10.0, "utility": 9.0, "grid_worker": 5.0}


def rank(units: list[dict], event: str, location: tuple[float, float], n: int = 5) -> list[dict]:
    """Available units of a suitable type, best type first then shortest ETA."""
    types = EVENT_UNIT_TYPES.get(event, ("grid_worker",))
    out = []
    for u in units:
        if u["state"] != "available" or u["type"] not in types:
            continue
        lon, lat = u["location"]
        d = float(haversine_m(lon, lat, location[0], location[1]))
        eta = d * 1.4 / SPEED_MPS.get(u["type"], 8.0)  # 1.4: street distance over straight line
        out.append({"id": u["id"], "type": u["type"], "state": u["state"], "location": u["location"],
                    "distance_m": round(d, 1), "eta_s": round(eta, 1), "rank_type": types.index(u["type"])})
    out.sort(key=lambda x: (x["eta_s"] + 300 * x["rank_type"], x["id"]))
    return out[:n]
