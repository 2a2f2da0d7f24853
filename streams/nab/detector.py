"""The detector NAB measures: the stream's learned seasonal baseline plus a level-shift view,
each turned into an anomaly likelihood, on one unnamed series.

A NAB series has no kind, no limits and no city. Two raw scores per reading, both distances
from normal in spreads scaled to [0, 1]:

- ``seasonal``: the reading against the :class:`SeasonalBaseline` of its hour of the week
  (rush hour is normal at 8 a.m. on a weekday, the same value at 3 a.m. is not);
- ``shift``: a short exponential mean of the readings against a slow robust level (the level
  moved, whatever the hour).

Raw distances are not comparable across series (a noisy sensor is far from normal all the
time), so each goes through Numenta's anomaly likelihood (:mod:`streams.detectors.likelihood`):
only a raw score unusually high *for this series* counts. The score of a point is the larger
log-likelihood once it reaches ``GATE``; after a report the detector stays quiet for
``COOLDOWN`` points (one situation, one alarm).
"""

from __future__ import annotations

from streams.detectors.base import RobustLevel
from streams.detectors.baseline import SeasonalBaseline
from streams.detectors.likelihood import AnomalyLikelihood, log_score
from streams.monitor import RELEARN_AFTER

NAME = "citybrain"
COOLDOWN = 100
#: log-likelihood that opens a report (0.4: the likelihood is above 1 - 1e-4)
GATE = 0.4
#: spreads at which a raw score saturates at 1
SATURATE = 10.0
#: the baseline does not learn from readings this many spreads off (unless they last)
GUARD = 7.0
#: readings in the likelihoods' Gaussian of recent raw-score averages
HISTORY = 500


class NabDetector:
    """One point at a time over (t, x): returns the anomaly score of the point in [0, 1]."""

    __slots__ = ("cooldown", "quiet", "base", "slow", "fast", "seasonal", "shift", "off_run")

    def __init__(self, cooldown: int | None = None) -> None:
        self.cooldown, self.quiet = COOLDOWN if cooldown is None else cooldown, 0
        self.base = SeasonalBaseline()
        self.slow = RobustLevel(alpha=0.01)  # the series' level over ~100 readings
        self.fast: float | None = None  # exponential mean over ~10 readings
        self.seasonal = AnomalyLikelihood(long=HISTORY)
        self.shift = AnomalyLikelihood(long=HISTORY)
        self.off_run = 0

    def raw_scores(self, t: float, x: float) -> tuple[float, float]:
        """(seasonal, shift) raw scores of ``x`` in [0, 1], before learning from it."""
        e = self.base.expected(t)
        z_seasonal = 0.0 if e is None else abs(x - e[0]) / e[1]
        fast = x if self.fast is None else self.fast + 0.1 * (x - self.fast)
        z_shift = abs(self.slow.z(fast)) if self.slow.n > 30 else 0.0
        return min(1.0, z_seasonal / SATURATE), min(1.0, z_shift / SATURATE)

    def score_learn_one(self, t: float, x: float) -> float:
        r_seasonal, r_shift = self.raw_scores(t, x)
        score = max(log_score(self.seasonal.score_one(r_seasonal)), log_score(self.shift.score_one(r_shift)))
        # learn: the baseline skips far-off readings (a flood must not become normal) until they last
        self.off_run = self.off_run + 1 if r_seasonal * SATURATE >= GUARD else 0
        if self.off_run == 0 or self.off_run > RELEARN_AFTER:
            self.base.learn_one(t, x)
        self.fast = x if self.fast is None else self.fast + 0.1 * (x - self.fast)
        self.slow.learn(x)
        self.seasonal.learn_one(r_seasonal)
        self.shift.learn_one(r_shift)
        if self.quiet > 0:
            self.quiet -= 1
            return 0.0
        if score < GATE:
            return 0.0
        self.quiet = self.cooldown
        return score
