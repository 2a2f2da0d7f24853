"""The detector NAB measures: the stream's learned seasonal baseline plus a level-shift view,
each turned into an anomaly likelihood, their evidence added up, on one unnamed series.

A NAB series has no kind, no limits and no city. Two raw scores per reading, both distances
from normal in spreads scaled to [0, 1]:

- ``seasonal``: the reading against the :class:`SeasonalBaseline` of its hour of the week
  (rush hour is normal at 8 a.m. on a weekday, the same value at 3 a.m. is not);
- ``shift``: a short exponential mean of the readings against a slow robust level (the level
  moved, whatever the hour).

Raw distances are not comparable across series (a noisy sensor is far from normal all the
time), so each goes through Numenta's anomaly likelihood (:mod:`streams.detectors.likelihood`):
only a raw score unusually high *for this series* counts. The two views' evidence is added on
Numenta's log scale (``joint``): the log of the product of their two tail probabilities, so a
point both views find somewhat unusual outranks one that only one view finds barely unusual,
and a lone view's noise is not doubled into twice the false alarms (``either``, the larger of
the two, was the detector before 2026-12-02). A report opens at ``GATE`` = 0.5, Numenta's own
NAB threshold (tail probability 1e-5); after a report the detector stays quiet for
``cooldown`` points (one situation, one alarm).

Heavy-tailed noise (request latencies, tweet counts) fools the likelihood's Gaussian: its
averaged raw scores are skewed, so an ordinary spike looks like a 1e-5 event in both views at
once. A candidate report (joint score at the gate) is therefore checked against the last
``ranks`` averages of each view (:meth:`AnomalyLikelihood.capped`): a level a view reached c
times in that history has a tail probability of at least c / ``ranks``. The history holds the
averages of live, non-quiet readings (not a report's aftermath, so a second anomaly soon after a
first is still new). ``bench/bench_nab.py``: false alarms on seven synthetic no-anomaly series
57.3 -> 35.0 (iid lognormal 31.3 -> 20.0), the subset's standard score within 0.1 held out,
reward_low_FP +7. The standard score hangs on ``ranks`` (1,000 / 4,000: 65.7 / 64.5 file-out, one
or two windows): 2,000 is the best of the subset's choices, not a robust optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.detectors.base import RobustLevel
from streams.detectors.baseline import RES, SeasonalBaseline
from streams.detectors.likelihood import AnomalyLikelihood, log_score

NAME = "citybrain"
#: log-likelihood that opens a report: 0.5 is a tail probability of 1e-5 (Numenta's threshold)
GATE = 0.5
#: spreads at which a raw score saturates at 1
SATURATE = 10.0
#: the baseline does not learn from readings this many spreads off (unless they last)
GUARD = 7.0
#: ... unless they last this many points (NAB files have one cadence each, so a count will do)
RELEARN_AFTER_POINTS = 200


@dataclass(frozen=True, slots=True)
class NabKnobs:
    """The detector's few settings: one set for every file (``bench/bench_nab.py`` sweeps them)."""

    gate: float = GATE
    cooldown: int = 100
    #: readings in the likelihoods' Gaussian of recent raw-score averages
    history: int = 500
    #: "joint": the views' log-likelihoods added; "either": the larger one
    combine: str = "joint"
    #: averages per view whose empirical tail bounds a candidate report's evidence (0: off, the
    #: detector before 2026-12-03); 2,000 is ~1 week of 5-minute readings
    ranks: int = 2000


class KnownExpectationBaseline(SeasonalBaseline):
    """The stream's seasonal baseline, learning with the expectation the score already looked up.

    Bit-identical to :meth:`SeasonalBaseline.learn_one` (a test compares the states); it saves
    NAB mode one bucket lookup per point of its ~10 us budget.
    """

    __slots__ = ()

    def learn_expected(self, t: float, x: float, e: tuple[float, float] | None) -> None:
        if e is not None:
            self._learn_slot(RES, 0.0, x - e[0])
        for s in self._slots(t):
            self._learn_slot(s, self.alpha, x)


class NabDetector:
    """One point at a time over (t, x): returns the anomaly score of the point in [0, 1]."""

    __slots__ = ("cooldown", "gate", "joint", "quiet", "base", "slow", "fast", "seasonal", "shift", "off_run")

    def __init__(self, knobs: NabKnobs = NabKnobs()) -> None:
        if knobs.combine not in ("joint", "either"):
            raise ValueError(f"combine must be 'joint' or 'either', not {knobs.combine!r}")
        self.cooldown, self.gate, self.joint = knobs.cooldown, knobs.gate, knobs.combine == "joint"
        self.quiet = 0
        self.base = KnownExpectationBaseline()
        self.slow = RobustLevel(alpha=0.01)  # the series' level over ~100 readings
        self.fast: float | None = None  # exponential mean over ~10 readings
        self.seasonal = AnomalyLikelihood(long=knobs.history, ranks=knobs.ranks)
        self.shift = AnomalyLikelihood(long=knobs.history, ranks=knobs.ranks)
        self.off_run = 0

    def score_learn_one(self, t: float, x: float) -> float:
        e = self.base.expected(t)
        z_seasonal = 0.0 if e is None else abs(x - e[0]) / e[1]
        fast = self.fast = x if self.fast is None else self.fast + 0.1 * (x - self.fast)
        z_shift = abs(self.slow.z(fast)) if self.slow.n > 30 else 0.0
        # raw scores in [0, 1]: distances from normal in spreads, saturating at SATURATE
        seasonal, shift = self.seasonal, self.shift
        a = log_score(seasonal.score_learn_one(min(1.0, z_seasonal / SATURATE)))
        b = log_score(shift.score_learn_one(min(1.0, z_shift / SATURATE)))
        score = min(1.0, a + b) if self.joint else max(a, b)
        # learn: the baseline skips far-off readings (a flood must not become normal) until they last
        self.off_run = self.off_run + 1 if z_seasonal >= GUARD else 0
        if self.off_run == 0 or self.off_run > RELEARN_AFTER_POINTS:
            self.base.learn_expected(t, x, e)
        self.slow.learn(x)
        if self.quiet > 0:  # a report's aftermath: not remembered by the ranks
            self.quiet -= 1
            return 0.0
        if score >= self.gate and seasonal.ranked is not None:  # a candidate: is it rare for this series?
            a, b = seasonal.capped(a), shift.capped(b)
            score = min(1.0, a + b) if self.joint else max(a, b)
        seasonal.remember()
        shift.remember()
        if score < self.gate:
            return 0.0
        self.quiet = self.cooldown
        return score
