"""Sensor faults: out of physical range, stuck values, sudden silence.

These say "the sensor is broken", not "the city is in trouble", so fusion turns them into
``sensor_fault`` / ``device_offline`` warnings (or ``power_outage`` when many go quiet at once).
"""

from __future__ import annotations

from citybrain.vocab import SENSOR_KINDS
from streams.detectors.base import RobustLevel
from streams.detectors.episode import EpisodeRule


class PhysicalRange:
    name = "range"
    rule = EpisodeRule(on=0.5, off=0.5, min_count=1, quiet_s=300.0)

    __slots__ = ("low", "high")

    def __init__(self, kind: str) -> None:
        k = SENSOR_KINDS.get(kind)
        self.low, self.high = (k.low, k.high) if k else (float("-inf"), float("inf"))

    def score_one(self, t: float, x: float) -> tuple[float, str]:
        if self.low <= x <= self.high:
            return 0.0, ""
        return 0.6, f"{x:g} outside the physical range [{self.low:g}, {self.high:g}]"

    def learn_one(self, t: float, x: float) -> None:
        """Physics does not change."""

    def state(self) -> list:
        return []

    def restore(self, s: list) -> None:
        pass


class Flatline:
    """The same value for ``min_run`` readings in a row, on a sensor that normally moves."""

    name = "flatline"
    rule = EpisodeRule(on=0.5, off=0.5, min_count=1, quiet_s=0.0)

    __slots__ = ("min_run", "last", "run", "moves")

    def __init__(self, min_run: int = 30) -> None:
        self.min_run = min_run
        self.last: float | None = None
        self.run = 0
        self.moves = 0  # how often the value changed: a sensor that never moves is not "stuck"

    def score_one(self, t: float, x: float) -> tuple[float, str]:
        run = self.run + 1 if x == self.last else 1
        if run < self.min_run or self.moves < self.min_run:
            return 0.0, ""
        return 0.5, f"stuck at {x:g} for {run} readings"

    def learn_one(self, t: float, x: float) -> None:
        if x == self.last:
            self.run += 1
        else:
            self.run, self.moves = 1, min(self.moves + 1, 1 << 30)
        self.last = x

    def state(self) -> list:
        return [self.last, self.run, self.moves]

    def restore(self, s: list) -> None:
        self.last, self.run, self.moves = s


class Cadence:
    """A device's own reporting rhythm, to judge silence against (on event time)."""

    __slots__ = ("last_t", "gaps", "factor", "min_silence_s")

    def __init__(self, factor: float = 5.0, min_silence_s: float = 120.0) -> None:
        self.last_t: float | None = None
        self.gaps = RobustLevel(alpha=0.05)
        self.factor, self.min_silence_s = factor, min_silence_s

    def deadline(self) -> float | None:
        """Event time after which this device counts as silent (None until its rhythm is known)."""
        if self.last_t is None or self.gaps.n < 3:
            return None
        return self.last_t + max(self.min_silence_s, self.factor * (self.gaps.level + 3 * self.gaps.spread))

    def seen(self, t: float) -> None:
        if self.last_t is not None and t > self.last_t:
            self.gaps.learn(t - self.last_t)
        if self.last_t is None or t > self.last_t:
            self.last_t = t

    def state(self) -> list:
        return [self.last_t, self.gaps.state()]

    def restore(self, s: list) -> None:
        self.last_t = s[0]
        self.gaps.restore(s[1])
