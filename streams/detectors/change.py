"""Two-sided CUSUM on standardised values: level shifts and slow drifts.

Values are standardised against a slow robust level that does not learn from the shift it is
trying to detect (it learns only while both sums are small), so a sustained shift keeps the sum
growing instead of being absorbed. With a seasonal ``reference`` (the device's baseline) the
residuals from the daily profile are summed instead, so rush hour is not a "shift".
"""

from __future__ import annotations

from streams.detectors.base import RobustLevel, squash
from streams.detectors.episode import EpisodeRule


class Cusum:
    name = "change"
    rule = EpisodeRule(on=0.5, off=0.2, min_count=1, quiet_s=900.0)

    __slots__ = ("k", "h", "warmup", "ref", "pos", "neg", "since", "reference")

    def __init__(self, k: float = 0.75, h: float = 12.0, warmup: int = 30, alpha: float = 0.02,
                 reference=None) -> None:
        self.k, self.h, self.warmup = k, h, warmup
        self.reference = reference  # anything with expected(t) -> (level, spread) | None
        self.ref = RobustLevel(alpha=alpha)
        self.pos = self.neg = 0.0
        self.since: float | None = None

    def score_one(self, t: float, x: float) -> tuple[float, str]:
        if self.reference is not None:
            e = self.reference.expected(t)
            if e is None:
                return 0.0, ""
            level, spread = e
            z = (x - level) / spread
        elif self.ref.n < self.warmup:
            return 0.0, ""
        else:
            level, z = self.ref.level, self.ref.z(x)
        z = max(-10.0, min(10.0, z))
        # capped where the score saturates, so the sum drains soon after the level comes back
        cap = 3.0 * self.h
        self.pos = min(cap, max(0.0, self.pos + z - self.k))
        self.neg = min(cap, max(0.0, self.neg - z - self.k))
        s = max(self.pos, self.neg)
        if s == 0.0:
            self.since = None
        elif self.since is None:
            self.since = t
        direction = "up" if self.pos >= self.neg else "down"
        return squash(s / self.h, 1.0, 3.0), f"level shift {direction} from {level:.3g} (cusum {s:.1f})"

    def learn_one(self, t: float, x: float) -> None:
        if max(self.pos, self.neg) < self.h:
            self.ref.learn(x)

    def reset(self) -> None:
        self.pos = self.neg = 0.0

    def state(self) -> list:
        return [self.ref.state(), self.pos, self.neg, self.since]

    def restore(self, s: list) -> None:
        self.ref.restore(s[0])
        self.pos, self.neg, self.since = s[1], s[2], s[3]
