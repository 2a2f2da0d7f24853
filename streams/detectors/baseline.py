"""Learned per-device baseline with daily and weekly seasonality.

Robust level and spread per hour-of-week bucket (168), falling back to the hour-of-day bucket
(24) and then to the whole series while a bucket is young: rush hour is normal at 8 a.m. on a
weekday, the same traffic at 3 a.m. is not. Buckets are flat float arrays: ~4.6 kB per device.
"""

from __future__ import annotations

import base64
import math
from array import array

from streams.detectors.base import squash, winsorised_step
from streams.detectors.episode import EpisodeRule

WEEK, DAY = 168, 24
_SLOTS = WEEK + DAY + 1
RES = _SLOTS  # extra slot: spread of the residuals from the profile (the noise level, all hours)
MIN_N = 4  # observations before a bucket is trusted
WEEK_S = (WEEK + 1) * 3600.0  # a week and an hour: every hour of the week seen whole once
SMOOTH = 4.0  # hour buckets further apart than this many spreads are a step, not a slope
MIN_H = 0.25  # hours of data before a profile bucket is trusted
RES_PER_HOUR = 2.0  # rate per hour of the profile's residual spread (~30 minutes of memory)


class SeasonalBaseline:
    name = "baseline"
    rule = EpisodeRule(on=0.5, off=0.2, min_count=2, quiet_s=900.0)

    __slots__ = ("alpha", "warmup", "utc_offset_s", "side", "second", "level", "spread", "n")

    def __init__(self, utc_offset_s: float = 0.0, alpha: float = 0.1, warmup: int = 30, side: int = 0,
                 second: SeasonalProfile | None = None) -> None:
        self.alpha, self.warmup, self.utc_offset_s = alpha, warmup, utc_offset_s
        self.side = side  # 0: both directions, 1: only above normal, -1: only below
        # a second opinion (the sensor's Cusum profile, not learned here): a reading is unusual
        # only if it is far from this hour's recent level and from what the hour usually is (both
        # in this baseline's spreads: the profile's own are wide, they hold the hour's slope)
        self.second = second
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
        for s in self._slots(t)[:2]:
            if self.n[s] >= MIN_N:
                return self.level[s], self._spread(s)
        return None

    def _spread(self, s: int) -> float:
        """Bucket ``s``'s spread; a young bucket's is a guess from a few values: never below the
        noise level (the residual slot) or a twentieth of the whole series' spread."""
        return max(self.spread[s], 0.8 * self.spread[RES], 0.05 * self.spread[_SLOTS - 1],
                   1e-6 * abs(self.level[s]), 1e-9)

    def score_one(self, t: float, x: float) -> tuple[float, str]:
        e = self.expected(t)
        if e is None:
            return 0.0, ""
        level, spread = e
        z = (x - level) / spread
        e2 = None if self.second is None else self.second.expected(t)
        if e2 is not None and abs((x - e2[0]) / spread) < abs(z):  # its level, in this noise's spreads
            level = e2[0]
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


class SeasonalProfile(SeasonalBaseline):
    """The baseline's buckets, weighted by time instead of by reading: what this hour usually
    looks like over past days and weeks, not over the last few readings.

    Why: :class:`SeasonalBaseline` moves 10 % a reading, so a bucket follows the last ~10
    readings (5 minutes at a 30 s cadence, a second at 10 readings/s). That is what judges a
    single reading, but it absorbs a 2-spread level shift, or a drift of a spread an hour, before
    a change detector standardised against it can add the shift up (measured 2026-12-04: the
    shift was never found, at any cadence, the drift only after 5-8 hours). Here a reading weighs the event time since the one before
    (``dt``, in hours), ``n`` holds hours of data, and a bucket moves ``per_hour`` of the way per
    hour of readings it gets, whatever the cadence (~4 weeks of memory for an hour-of-week bucket,
    ~4 days for an hour-of-day one; young buckets average all they hold, by time). The residual
    spread (the noise level) learns ``RES_PER_HOUR`` an hour. A sensor that reports every 5
    minutes and then every second does not let a few minutes of fast readings outweigh weeks.
    """

    __slots__ = ("per_hour", "first_t")

    def __init__(self, utc_offset_s: float = 0.0, per_hour: float = 0.25) -> None:
        super().__init__(utc_offset_s, alpha=0.0, warmup=0)
        self.per_hour = per_hour
        self.first_t: float | None = None  # event time of the first reading learned

    def week_old(self, t: float) -> bool:
        return self.first_t is not None and t - self.first_t >= WEEK_S

    def expected(self, t: float) -> tuple[float, float] | None:
        """(level, spread) usual at ``t``, once the profile holds a whole week; None before.

        Unlike the baseline's, a bucket counts only once it holds a previous cycle: before that
        it holds this very hour's readings so far, which follow a shift as it happens, and an
        hour-of-day bucket mixes weekdays with the weekend (a device first seen on a Sunday
        would find every weekday's rush hour a "shift"). So the first week is learned, not
        judged; then the hour-of-week bucket, or the hour-of-day one where that holds less than
        ``MIN_H`` hours.

        The level is interpolated between the bucket's and its neighbour's (an hour's mean
        belongs to its middle), so a steady daily rise is not a "shift" within every hour of it;
        not across a step (neighbours more than ``SMOOTH`` spreads apart, the wider bucket's:
        along a steady rise they differ by ~3 at most, at rush hour by tens) nor, between
        hour-of-week buckets, across midnight (Friday's last hour says nothing of Saturday's first).
        """
        if not self.week_old(t):
            return None
        how, hod, _ = self._slots(t)
        s = how if self.n[how] >= MIN_H else hod
        if self.n[s] < MIN_H:
            return None
        level, spread = self.level[s], self._spread(s)
        frac = ((t + self.utc_offset_s) % 3600.0) / 3600.0
        step, w = (1, frac - 0.5) if frac >= 0.5 else (-1, 0.5 - frac)
        nb = (s + step) % WEEK if s < WEEK else WEEK + (s - WEEK + step) % DAY
        gap = self.level[nb] - level
        if self.n[nb] < MIN_H or abs(gap) > SMOOTH * max(self.spread[s], self.spread[nb]) or (
                s < WEEK and nb // DAY != s // DAY):
            return level, spread
        return level + gap * w, spread

    def learn_one(self, t: float, x: float, dt: float = 0.0) -> None:
        """Learn ``x`` at ``t``, ``dt`` seconds of event time after the reading before."""
        if self.first_t is None:
            self.first_t = t
        e = self.expected(t)
        h = dt / 3600.0
        if e is not None:
            self._learn_timed(RES, x - e[0], h, RES_PER_HOUR, track_level=False)
        for s in self._slots(t):
            self._learn_timed(s, x, h, self.per_hour)

    def _learn_timed(self, s: int, x: float, h: float, per_hour: float, track_level: bool = True) -> None:
        """:func:`winsorised_step` with a reading of weight ``h`` hours: the rate is
        max(per_hour * h, h / (n + h)), i.e. ``n`` counted in readings of that weight."""
        n = self.n[s]
        n_eq = n / h if h > 0 else (0.0 if n == 0 else math.inf)
        self.level[s], self.spread[s] = winsorised_step(self.level[s], self.spread[s], n_eq, x, per_hour * h,
                                                        track_level=track_level)
        self.n[s] = min(n + h, 1e9)

    def shift(self, d: float) -> None:
        """Move every bucket's level by ``d`` (a level shift accepted as the new normal)."""
        for s in range(RES):
            self.level[s] += d
