"""Rate of change: water rising fast, temperature climbing, gas building up.

Per-kind limits in units per minute where a physical rule exists (a 5 cm/min rise of a river is
news whatever its level); elsewhere the rate is judged against the device's own learned rate
spread.
"""

from __future__ import annotations

from streams.detectors.base import RobustLevel, squash
from streams.detectors.episode import EpisodeRule

#: kind -> rising rate (units per minute) that is worth a warning on its own
RISE_PER_MIN: dict[str, float] = {
    "water_level": 0.05,
    "temperature": 2.0,
    "smoke": 50.0,
    "gas": 5.0,
    "rainfall": 20.0,
}


class RateOfChange:
    name = "rate"
    rule = EpisodeRule(on=0.5, off=0.2, min_count=2, quiet_s=600.0)

    __slots__ = ("limit", "warmup", "last_t", "last_x", "rates")

    def __init__(self, kind: str = "", warmup: int = 30) -> None:
        self.limit = RISE_PER_MIN.get(kind)
        self.warmup = warmup
        self.last_t: float | None = None
        self.last_x = 0.0
        self.rates = RobustLevel(alpha=0.05)

    def _rate(self, t: float, x: float) -> float | None:
        if self.last_t is None or t <= self.last_t:
            return None
        return (x - self.last_x) / (t - self.last_t) * 60.0

    def score_one(self, t: float, x: float) -> tuple[float, str]:
        r = self._rate(t, x)
        if r is None:
            return 0.0, ""
        if self.limit is not None:
            return squash(r / self.limit, 1.0, 3.0), f"rising {r:.3g}/min (limit {self.limit:g}/min)"
        if self.rates.n < self.warmup:
            return 0.0, ""
        z = abs(self.rates.z(r))
        return squash(z, 6.0, 15.0), f"changing {r:+.3g}/min, {z:.1f} spreads faster than usual"

    def learn_one(self, t: float, x: float) -> None:
        r = self._rate(t, x)
        if r is not None:
            self.rates.learn(r)
        if self.last_t is None or t > self.last_t:
            self.last_t, self.last_x = t, x

    def state(self) -> list:
        return [self.last_t, self.last_x, self.rates.state()]

    def restore(self, s: list) -> None:
        self.last_t, self.last_x = s[0], s[1]
        self.rates.restore(s[2])
