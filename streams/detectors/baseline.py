"""Learned per-device baseline with daily and weekly seasonality.

Robust level and spread per hour-of-week bucket (168), falling back to the hour-of-day bucket
(24) and then to the whole series while a bucket is young: rush hour is normal at 8 a.m. on a
weekday, the same traffic at 3 a.m. is not. Buckets are flat float arrays: ~4.6 kB per device.
"""

from __future__ import annotations

import base64
from array import array

from streams.detectors.base import squash, winsorised_step
from streams.detectors.episode import EpisodeRule

WEEK, DAY = 168, 24
_SLOTS = WEEK + DAY + 1
RES = _SLOTS  # extra slot: spread of the residuals from the profile (the noise level, all hours)
MIN_N = 4  # observations before a bucket is trusted


class SeasonalBaseline:
    name = "baseline"
    rule = EpisodeRule(on=0.5, off=0.2, min_count=2, quiet_s=900.0)

    __slots__ = ("alpha", "warmup", "utc_offset_s", "side", "level", "spread", "n")

    def __init__(self, utc_offset_s: float = 0.0, alpha: float = 0.1, warmup: int = 30, side: int = 0) -> None:
        self.alpha, self.warmup, self.utc_offset_s = alpha, warmup, utc_offset_s
        self.side = side  # 0: both directions, 1: only above normal, -1: only below
        self.level = array("d", bytes(8 * (_SLOTS + 1)))
        self.spread = array("d", bytes(8 * (_SLOTS + 1)))
        self.n = array("d", bytes(8 * (_SLOTS + 1)))

    def _slots(self, t: float) -> tuple[int, int, int]:
        hours = int((t + self.utc_offset_s) // 3600)
        # epoch day 0 was a Thursday: weekday 0 = Monday
        how = ((hours // 24 + 3) % 7) * 24 + hours % 24
        return how, WEEK + hours % 24, _SLOTS - 1

    def expected(self, t: float) -> tuple[float, float] | None:
        """(level, spread) the baseline expects at event time ``t``; None while it cannot tell.

        A young hour bucket is not judged against the whole series: the first rush hours would
        look anomalous, never be learned, and stay anomalous for ever.
        """
        if self.n[_SLOTS - 1] < self.warmup:
            return None
        glob = _SLOTS - 1
        for s in self._slots(t)[:2]:
            if self.n[s] >= MIN_N:
                # a young bucket's spread is a guess from a few values: never below the noise level
                spread = max(self.spread[s], 0.8 * self.spread[RES], 0.05 * self.spread[glob],
                             1e-6 * abs(self.level[s]), 1e-9)
                return self.level[s], spread
        return None

    def score_one(self, t: float, x: float) -> tuple[float, str]:
        e = self.expected(t)
        if e is None:
            return 0.0, ""
        level, spread = e
        z = (x - level) / spread
        if self.side:
            z = max(0.0, z * self.side)
        return squash(abs(z), 4.0, 10.0), f"{x:g} vs usual {level:.3g} +- {spread:.2g} ({z:+.1f} spreads)"

    def learn_one(self, t: float, x: float) -> None:
        e = self.expected(t)
        if e is not None:
            self._learn_slot(RES, 0.0, x - e[0])
        for s in self._slots(t):
            self._learn_slot(s, self.alpha, x)

    def _learn_slot(self, s: int, alpha: float, x: float) -> None:
        """Winsorised EW update of one slot; ``alpha`` 0: the residual slot, level fixed at 0."""
        self.level[s], self.spread[s] = winsorised_step(self.level[s], self.spread[s], self.n[s], x,
                                                        alpha or 0.02, track_level=bool(alpha))
        self.n[s] = min(self.n[s] + 1, 1e9)

    def state(self) -> list:
        """Compact and exact: the three arrays as one base64 string (~6 kB)."""
        raw = self.level.tobytes() + self.spread.tobytes() + self.n.tobytes()
        return [base64.b64encode(raw).decode()]

    def restore(self, s: list) -> None:
        raw = base64.b64decode(s[0])
        k = len(raw) // 3
        for i, arr in enumerate((self.level, self.spread, self.n)):
            arr[:] = array("d", raw[i * k:(i + 1) * k])
