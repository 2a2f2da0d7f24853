"""The detector NAB measures: the same monitor code the stream uses, on one unnamed series.

A NAB series has no kind, no limits and no city: it gets the generic detectors (learned
seasonal baseline, change detection, rate of change, stuck values) with their episodes. The
anomaly score of a point is the score of an episode that opens at that point, so an ongoing
anomaly is reported once, as a person on duty would want it; after a report the detector stays
quiet for ``cooldown`` points (one situation, one alarm).
"""

from __future__ import annotations

from streams.detectors.baseline import SeasonalBaseline
from streams.detectors.change import Cusum
from streams.detectors.faults import Flatline
from streams.detectors.rate import RateOfChange
from streams.monitor import Monitor

NAME = "citybrain"
COOLDOWN = 200


def nab_monitor() -> Monitor:
    """One configuration for every file: no per-file tuning."""
    base = SeasonalBaseline()
    return Monitor("series", "", [base, Cusum(h=6.0, reference=base), RateOfChange(), Flatline()])


class NabDetector:
    """One point at a time over (t, x): returns the anomaly score of the point in [0, 1]."""

    __slots__ = ("monitor", "cooldown", "quiet", "_found")

    def __init__(self, cooldown: int | None = None) -> None:
        self.monitor = nab_monitor()
        self.cooldown, self.quiet = COOLDOWN if cooldown is None else cooldown, 0
        self._found: list = []

    def score_learn_one(self, t: float, x: float) -> float:
        found = self._found
        found.clear()
        self.monitor.step(t, x, found)
        if self.quiet > 0:
            self.quiet -= 1
            return 0.0
        score = max((f.score for f in found if f.active), default=0.0)
        if score > 0:
            self.quiet = self.cooldown
        return score
