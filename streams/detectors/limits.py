"""Static limits from the city file (``Device.limits``: warning / alarm), with hysteresis.

The minimum duration lives in the episode rule (two readings by default), so one glitch above
the alarm level is not an incident but a water level above it twice in a row is.
"""

from __future__ import annotations

from streams.detectors.episode import EpisodeRule


class StaticLimits:
    name = "limits"
    rule = EpisodeRule(on=0.5, off=0.45, min_count=2, quiet_s=120.0, step=0.15)

    __slots__ = ("warning", "alarm", "hysteresis", "_above")

    def __init__(self, warning: float | None, alarm: float | None, hysteresis: float = 0.05) -> None:
        self.warning, self.alarm, self.hysteresis = warning, alarm, hysteresis
        self._above = False

    def score_one(self, t: float, x: float) -> tuple[float, str]:
        lo = self.warning if self.warning is not None else self.alarm
        if lo is None:
            return 0.0, ""
        # hysteresis: once above, stay "above" until below the limit minus a margin
        threshold = lo - abs(lo) * self.hysteresis if self._above else lo
        self._above = x >= threshold
        if not self._above:
            return 0.0, f"{x:g} below warning {lo:g}"
        if self.alarm is not None and x >= self.alarm:
            over = (x - self.alarm) / max(abs(self.alarm), 1e-9)
            return min(1.0, 0.85 + over), f"{x:g} above alarm limit {self.alarm:g}"
        top = self.alarm if self.alarm is not None else lo * 2 or 1.0
        frac = (x - lo) / max(top - lo, 1e-9)
        return 0.5 + 0.3 * max(0.0, min(1.0, frac)), f"{x:g} above warning limit {lo:g}"

    def learn_one(self, t: float, x: float) -> None:
        """Static: nothing to learn."""

    def state(self) -> list:
        return [self._above]

    def restore(self, s: list) -> None:
        self._above = bool(s[0])
