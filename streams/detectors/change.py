"""Two-sided CUSUM on standardised values: level shifts and slow drifts.

Values are standardised against a slow expectation that does not learn from the shift it is
trying to detect (it learns only while both sums are small), so a sustained shift keeps the sum
growing instead of being absorbed. With a :class:`SeasonalProfile` the expectation is what this
hour usually is over past days and weeks, so rush hour is not a "shift"; without one it is a slow
robust level. While the profile is still learning (a device's first week) a ``fallback`` (the
sensor's fast baseline) stands in: it absorbs small shifts but still shows large ones.

Sums are taken per time, not per reading: a reading counts fully from ``FULL_S`` after the one
before and in proportion below that, so a sensor reporting ten times a second adds up a smooth
signal's small, correlated residuals no faster than one reporting every 10 s (every city cadence
counts fully). When the monitor decides a shift has lasted so long that it is the new normal, the
expectation moves by the shift (``rebase``) instead of keeping the alarm up for weeks.

``side`` (as the baseline's) makes one direction harmless: smoke or a temperature going down is no
fire, power going up no outage. Both sums still run; a shift the harmless way scores nothing, so
the monitor lets the Cusum learn it and it becomes the new normal (``rebase``) without an alarm.
"""

from __future__ import annotations

from streams.detectors.base import RobustLevel, squash
from streams.detectors.baseline import SeasonalProfile
from streams.detectors.episode import EpisodeRule

#: seconds between readings from which a reading counts fully in the sums
FULL_S = 10.0
#: rate of the running mean of the deviation (what a rebase moves the expectation by)
DEV_ALPHA = 0.05


class Cusum:
    name = "change"
    rule = EpisodeRule(on=0.5, off=0.2, min_count=1, quiet_s=900.0)

    __slots__ = ("k", "h", "warmup", "side", "ref", "pos", "neg", "since", "profile", "fallback", "profiled",
                 "last_t", "dt", "dev")

    def __init__(self, k: float = 0.75, h: float = 12.0, warmup: int = 30, alpha: float = 0.02,
                 profile: SeasonalProfile | None = None, fallback=None, side: int = 0) -> None:
        self.k, self.h, self.warmup = k, h, warmup
        self.side = side  # 0: both directions, 1: only a shift up matters, -1: only down
        self.profile = profile
        self.fallback = fallback  # anything with expected(t) -> (level, spread) | None
        self.profiled = False  # the profile gave this reading's expectation (score_one to learn_one)
        self.ref = RobustLevel(alpha=alpha)  # the expectation when there is no profile
        self.pos = self.neg = 0.0
        self.since: float | None = None
        self.last_t: float | None = None
        self.dt = 0.0  # event time since the reading before (score_one to learn_one)
        self.dev = 0.0  # running mean of the reading's deviation from the expectation

    def score_one(self, t: float, x: float) -> tuple[float, str]:
        last = self.last_t
        self.dt = 0.0 if last is None else min(3600.0, max(0.0, t - last))
        self.last_t = t if last is None else max(last, t)
        if self.profile is not None:
            e = self.profile.expected(t)
            self.profiled = e is not None
            if e is None and self.fallback is not None:
                e = self.fallback.expected(t)
            if e is None:
                return 0.0, ""
            level, spread = e
            z = (x - level) / spread
        elif self.ref.n < self.warmup:
            return 0.0, ""
        else:
            level, z = self.ref.level, self.ref.z(x)
        self.dev += DEV_ALPHA * (x - level - self.dev)
        w = 1.0 if last is None else min(1.0, self.dt / FULL_S)
        z = max(-10.0, min(10.0, z))
        # capped where the score saturates, so the sum drains soon after the level comes back
        cap = 3.0 * self.h
        self.pos = min(cap, max(0.0, self.pos + w * (z - self.k)))
        self.neg = min(cap, max(0.0, self.neg + w * (-z - self.k)))
        s = max(self.pos, self.neg)
        if s == 0.0:
            self.since = None
        elif self.since is None:
            self.since = t
        direction = "up" if self.pos >= self.neg else "down"
        judged = self.pos if self.side > 0 else self.neg if self.side < 0 else s
        return squash(judged / self.h, 1.0, 3.0), f"level shift {direction} from {level:.3g} (cusum {s:.1f})"

    def learn_one(self, t: float, x: float) -> None:
        s = max(self.pos, self.neg)
        if s >= 2.0 * self.h:  # scored >= 0.5: the monitor lets it learn once it is the new normal
            self.rebase()
        if self.profile is None:
            if s < self.h:
                self.ref.learn(x)
        elif s < self.h or not self.profiled:
            self.profile.learn_one(t, x, self.dt)

    def learn_guarded(self, t: float, x: float) -> None:
        """The monitor judged this reading anomalous: a profile that did not judge it (the
        fallback did, in the first week) learns it all the same; it is not what was tested."""
        if self.profile is not None and not self.profiled:
            self.profile.learn_one(t, x, self.dt)

    def rebase(self) -> None:
        """The shift is the new normal: move the expectation by it and start the sums again."""
        if self.profile is None:
            self.ref.level += self.dev
        elif self.profiled:  # (a shift seen against the fallback: the profile learns it as it is)
            self.profile.shift(self.dev)
        self.dev = self.pos = self.neg = 0.0
        self.since = None

    def state(self) -> list:
        p = self.profile
        return [self.ref.state(), self.pos, self.neg, self.since,
                None if p is None else [p.state()[0], p.first_t], self.last_t, self.dev]

    def restore(self, s: list) -> None:
        self.ref.restore(s[0])
        self.pos, self.neg, self.since = s[1], s[2], s[3]
        if len(s) > 4:
            if self.profile is not None and s[4] is not None:
                self.profile.restore([s[4][0]])
                self.profile.first_t = s[4][1]
            self.last_t, self.dev = s[5], s[6]
