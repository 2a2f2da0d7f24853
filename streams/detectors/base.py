"""What a detector says about a reading, and the robust running statistics they share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    """One detector's judgement on one source at one event time.

    ``started_at`` is the event time the abnormal episode began: together with ``detector`` and
    ``source`` it makes the warning id, so it must only depend on the data, never on arrival.
    ``active=False`` reports that the source is back to normal.
    """

    detector: str
    source: str
    source_kind: str
    t: float
    value: float | None
    score: float
    started_at: float
    explanation: str
    active: bool = True


def squash(z: float, z0: float = 3.0, z1: float = 8.0) -> float:
    """Map a distance from normal (in spreads) to [0, 1]: 0 below ``z0``, ~1 at ``z1`` and beyond."""
    if z <= z0:
        return 0.0
    return min(1.0, (z - z0) / (z1 - z0))


class RobustLevel:
    """Exponentially weighted level and spread that outliers cannot drag.

    Updates are winsorised at ``clip`` spreads, a cheap stand-in for median/MAD that needs O(1)
    memory and time per value (what a per-device state needs).
    """

    __slots__ = ("alpha", "clip", "level", "spread", "n")

    def __init__(self, alpha: float = 0.05, clip: float = 3.0) -> None:
        self.alpha, self.clip = alpha, clip
        self.level = 0.0
        self.spread = 0.0
        self.n = 0

    def z(self, x: float, floor: float = 1e-9) -> float:
        """Signed distance of ``x`` from the level in spreads (0 while empty)."""
        if self.n == 0:
            return 0.0
        return (x - self.level) / max(self.spread, floor, abs(self.level) * 1e-3)

    def learn(self, x: float) -> None:
        self.level, self.spread = winsorised_step(self.level, self.spread, self.n, x, self.alpha, self.clip)
        self.n += 1

    def state(self) -> list[float]:
        return [self.level, self.spread, float(self.n)]

    def restore(self, s: list[float]) -> None:
        self.level, self.spread, self.n = float(s[0]), float(s[1]), int(s[2])


def winsorised_step(level: float, spread: float, n: float, x: float, alpha: float, clip: float = 3.0,
                    track_level: bool = True) -> tuple[float, float]:
    """One update of an EW level/spread pair with the deviation clipped at ``clip`` spreads.

    The rate is at least 1/(n+1) so young estimates converge fast; spread estimates sigma from
    the mean absolute deviation (E|X - mu| = sigma * sqrt(2/pi)). With ``track_level`` False
    the level stays put (the spread of residuals around a known 0).
    """
    if n == 0:
        return (x, 0.0) if track_level else (level, abs(x - level) * 1.2533)
    a = max(alpha, 1.0 / (n + 1))
    d = x - level
    s = spread if spread > 0 else abs(d)
    lim = clip * s if s > 0 else abs(d)
    d = max(-lim, min(lim, d))
    if track_level:
        level += a * d
    return level, spread + a * (abs(d) * 1.2533 - spread)
