"""NAB's ``skyline`` detector: the vote of seven of Etsy Skyline's tests, each over the whole history.

Every reading is appended to the history first, then each test votes on the history as a whole
(all readings since the file's start: nothing is forgotten); the score is the number of votes
divided by 8 (NAB divides by one more than the number of tests, so it never reaches 1). The
tests, with ``tail`` the mean of the last three readings (the last one alone while there are
fewer than three):

- median absolute deviation: ``|x - median| / MAD > 6`` for the last reading; no vote if MAD = 0;
- first hour average: ``|tail - mean| > 3 std`` (sample std) of the readings stamped between
  24 h and 23 h before the last one;
- stddev from average: ``|tail - mean| > 3 std`` of the whole history;
- stddev from moving average: ``|x - ewma| > 3 ewmstd`` (pandas' adjusted ewm, com = 50,
  bias-corrected std) for the last reading;
- mean subtraction cumulation: ``|x - mean| > 3 std`` of all readings before the last one;
- least squares: the mean of the last three residuals of a straight-line fit on time, ``> 3``
  times the residuals' population std, and both of them rounding to a nonzero integer (so a
  series whose residual spread is under 0.5 never votes here);
- histogram bins: the tail falls in one of 15 equal bins over the history's range holding 20
  readings or fewer; the lowest bin counts only if the tail is at the minimum itself, and a tail
  at the maximum is in no bin.

NAB runs these with pandas and numpy on the full history at every reading, O(n) a reading. Here
the means and spreads that can be degenerate (a flat history, whose mean pandas does not always
recover exactly) are still computed as pandas does, by numpy over the history; the median and
the MAD are exact order statistics of a sorted copy, the histogram's counts come from bisecting
it, the ewm and the straight-line fit are running recursions (the fit centred, so it is the
exact least-squares line; NAB's ``lstsq`` on raw epoch seconds solves an ill-conditioned system
and may differ in the last digits).

``py2_ints``: the file's values are integers (pandas reads them as int64), run as NAB's Python 2
code ran them: the tail is the floored integer mean ``(a + b + c) // 3``, and Python 2's round()
takes half away from zero (``round(0.5) == 1``). NAB's published scores come from its Python 2 runs.

The file's min, max and probation are accepted for the common interface and not used.
"""

from __future__ import annotations

import bisect
import math
from datetime import datetime

import numpy as np

EPOCH = datetime(1970, 1, 1)
DAY, HOUR = 86400.0, 3600.0
COM = 50.0
HIST_BINS, HIST_MAX_COUNT = 15, 20
VOTERS = 7


def pandas_mean_std(x: np.ndarray) -> tuple[float, float]:
    """Series.mean() and Series.std() as pandas computes them (two-pass, ddof 1; NaN where undefined)."""
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    mean = float(x.sum()) / n
    if n == 1:
        return mean, math.nan
    return mean, math.sqrt(float(((mean - x) ** 2).sum()) / (n - 1))


def median_sorted(a: list[float]) -> float:
    n = len(a)
    return a[n // 2] if n % 2 else (a[n // 2 - 1] + a[n // 2]) / 2


def kth_distance(a: list[float], centre: float, k: int) -> float:
    """The k-th smallest (0-based) of |a_i - centre| over a sorted list, in O(log n)."""
    p = bisect.bisect_right(a, centre)  # a[:p] <= centre < a[p:]
    n_left, n_right = p, len(a) - p

    def left(j: int) -> float:  # increasing in j
        return centre - a[p - 1 - j]

    def right(j: int) -> float:
        return a[p + j] - centre

    lo, hi = max(0, k + 1 - n_right), min(k + 1, n_left)
    while lo < hi:  # the number i of left distances among the k + 1 smallest
        i = (lo + hi) // 2
        if k + 1 - i > 0 and right(k - i) > left(i):
            lo = i + 1
        else:
            hi = i
    i, j = lo, k + 1 - lo
    return max(left(i - 1) if i else -math.inf, right(j - 1) if j else -math.inf)


def mad_sorted(a: list[float], centre: float) -> float:
    """The median of |a_i - centre| (the mean of the middle two for an even count)."""
    n = len(a)
    if n % 2:
        return kth_distance(a, centre, n // 2)
    return (kth_distance(a, centre, n // 2 - 1) + kth_distance(a, centre, n // 2)) / 2


class Ewm:
    """pandas' ``ewm(com, adjust=True)`` mean and bias-corrected std, updated a reading at a time."""

    def __init__(self, com: float) -> None:
        self.decay = 1.0 - 1.0 / (1.0 + com)
        self.mean = math.nan
        self.cov = 0.0
        self.sum_wt = self.sum_wt2 = self.old_wt = 1.0

    def add(self, x: float) -> None:
        if math.isnan(self.mean):
            self.mean = x
            return
        self.sum_wt *= self.decay
        self.sum_wt2 *= self.decay * self.decay
        self.old_wt *= self.decay
        old_mean = self.mean
        if self.mean != x:
            self.mean = (self.old_wt * old_mean + x) / (self.old_wt + 1.0)
        self.cov = (self.old_wt * (self.cov + (old_mean - self.mean) ** 2) + (x - self.mean) ** 2) / (self.old_wt + 1.0)
        self.sum_wt += 1.0
        self.sum_wt2 += 1.0
        self.old_wt += 1.0

    def std(self) -> float:
        num = self.sum_wt * self.sum_wt
        den = num - self.sum_wt2
        if den <= 0:
            return math.nan
        return math.sqrt(max(num / den * self.cov, 0.0))


class LineFit:
    """Running least-squares line of y on t (centred co-moments)."""

    def __init__(self) -> None:
        self.n = 0
        self.t0 = 0.0
        self.mt = self.my = self.stt = self.sty = self.syy = 0.0

    def add(self, t: float, y: float) -> None:
        if self.n == 0:
            self.t0 = t
        t -= self.t0
        self.n += 1
        dt, dy = t - self.mt, y - self.my
        self.mt += dt / self.n
        self.my += dy / self.n
        self.stt += dt * (t - self.mt)
        self.sty += dt * (y - self.my)
        self.syy += dy * (y - self.my)

    def residuals(self, ts: list[float], ys: list[float]) -> tuple[list[float], float]:
        """The residuals of the given points and the population std of all residuals."""
        if self.stt > 0:
            slope = self.sty / self.stt
            ssr = self.syy - slope * self.sty
        else:  # one time stamp: the best line is the mean
            slope, ssr = 0.0, self.syy
        icpt = self.my - slope * self.mt
        res = [y - (slope * (t - self.t0) + icpt) for t, y in zip(ts, ys)]
        return res, math.sqrt(max(ssr, 0.0) / self.n)


class EtsySkyline:
    def __init__(self, input_min: float, input_max: float, probation: int, *, py2_ints: bool = False) -> None:
        self.py2_ints = py2_ints
        self.values = np.empty(1024)
        self.times = np.empty(1024)
        self.n = 0
        self.ordered = True  # time stamps so far never decrease: the hour a day ago is a slice
        self.sorted: list[float] = []
        self.ewm = Ewm(COM)
        self.line = LineFit()

    def append(self, t: float, x: float) -> None:
        if self.n == len(self.values):
            self.values = np.concatenate([self.values, np.empty(self.n)])
            self.times = np.concatenate([self.times, np.empty(self.n)])
        if self.n and t < self.times[self.n - 1]:
            self.ordered = False
        self.values[self.n], self.times[self.n] = x, t
        self.n += 1
        bisect.insort(self.sorted, x)
        self.ewm.add(x)
        self.line.add(t, x)

    def tail(self) -> float:
        v = self.values
        n = self.n
        if n < 3:
            return float(v[n - 1])
        if self.py2_ints:
            return float((int(v[n - 1]) + int(v[n - 2]) + int(v[n - 3])) // 3)
        return (v[n - 1] + v[n - 2] + v[n - 3]) / 3

    def handle_record(self, timestamp: datetime, value: float) -> float:
        self.append((timestamp - EPOCH).total_seconds(), float(value))
        return sum(self.votes()) / (VOTERS + 1)

    def votes(self) -> list[bool]:
        n, x = self.n, float(self.values[self.n - 1])
        hist = self.values[:n]
        tail = float(self.tail())
        return [self.median_absolute_deviation(x), self.first_hour_average(tail),
                self.stddev_from_average(hist, tail), self.stddev_from_moving_average(x),
                self.mean_subtraction_cumulation(hist, x), self.least_squares(), self.histogram_bins(tail)]

    def median_absolute_deviation(self, x: float) -> bool:
        med = median_sorted(self.sorted)
        mad = mad_sorted(self.sorted, med)
        return mad != 0 and abs(x - med) / mad > 6

    def first_hour_average(self, tail: float) -> bool:
        now = float(self.times[self.n - 1])
        start, end = now - DAY, now - (DAY - HOUR)
        times = self.times[:self.n]
        if self.ordered:
            window = self.values[np.searchsorted(times, start, "left"):np.searchsorted(times, end, "left")]
        else:
            window = self.values[:self.n][(times >= start) & (times < end)]
        mean, std = pandas_mean_std(window)
        return abs(tail - mean) > 3 * std

    @staticmethod
    def stddev_from_average(hist: np.ndarray, tail: float) -> bool:
        mean, std = pandas_mean_std(hist)
        return abs(tail - mean) > 3 * std

    def stddev_from_moving_average(self, x: float) -> bool:
        return abs(x - self.ewm.mean) > 3 * self.ewm.std()

    @staticmethod
    def mean_subtraction_cumulation(hist: np.ndarray, x: float) -> bool:
        before = hist[:-1]
        mean = pandas_mean_std(before)[0]
        std = pandas_mean_std(before - mean)[1]  # pandas shifts the series first, then takes its std
        return abs(x - mean) > 3 * std

    def least_squares(self) -> bool:
        n = self.n
        if n < 3:
            return False
        ts, ys = self.times[n - 3:n].tolist(), self.values[n - 3:n].tolist()
        res, std = self.line.residuals(ts, ys)
        t = (res[2] + res[1] + res[0]) / 3
        if self.py2_ints:  # round(v) != 0, half away from zero
            return abs(t) > std * 3 and abs(std) >= 0.5 and abs(t) >= 0.5
        return abs(t) > std * 3 and abs(std) > 0.5 and abs(t) > 0.5  # round(v) != 0, half to even

    def histogram_bins(self, tail: float) -> bool:
        a = self.sorted
        lo, hi = a[0], a[-1]
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        step = (hi - lo) / HIST_BINS
        edges = [lo + i * step for i in range(HIST_BINS)] + [hi]

        def count(i: int) -> int:  # numpy's bins: [e_i, e_i+1), the last one closed
            right = bisect.bisect_right(a, edges[i + 1]) if i == HIST_BINS - 1 else bisect.bisect_left(a, edges[i + 1])
            return right - bisect.bisect_left(a, edges[i])

        if tail <= edges[0] and count(0) <= HIST_MAX_COUNT:
            return True
        j = bisect.bisect_right(edges, tail) - 1  # edges[j] <= tail < edges[j + 1]
        return 1 <= j < HIST_BINS and count(j) <= HIST_MAX_COUNT
