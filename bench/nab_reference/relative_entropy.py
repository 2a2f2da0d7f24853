"""NAB's ``relativeEntropy`` detector (Wang et al., "Statistical techniques for online anomaly
detection in data centers", 2011, figure 1, with NAB's parameters).

Readings are quantised into 5 bins over the file's whole range, ``ceil((x - min) / step)`` with
``step = (max - min) / 5``: min and max are read ahead from the whole file, so the bins look
ahead. The quantised values 0 ... 5 are histogrammed over ``[0, 5]`` in 5 unit bins, so bin 0
holds only readings at the file's exact minimum and the top bin holds both 4 and 5 (a value whose
quotient rounds above 5 falls outside and is dropped, as numpy does). From the 52nd reading on,
the last 52 readings' bin frequencies P_hat are tested against every hypothesis seen so far with
the statistic ``2 W KL(P_hat || P_i)``; the closest one under the chi-squared(4) 0.99 point
(about 13.28) is accepted and its count raised, and if none agrees P_hat becomes a new
hypothesis and the reading scores 1. Hypotheses never expire. NAB's "seen often enough" test
(count <= 1 after the increment) can never fire, so the score is 1 exactly when a new hypothesis
is made: the first window's own hypothesis scores 0, as does every reading before it and every
reading of a flat file (zero step).

``py2_ints``: the file's values are integers (pandas reads them as int64), run as NAB's Python 2
code ran them, where dividing integers floors: the step is ``(max - min) // 5`` and a reading's
bin ``(x - min) // step``, and a file whose range is under 5 gets a zero step (never anomalous).
NAB's published scores come from its Python 2 runs.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime

import numpy as np

BINS = 5
W = 52


def chi2_isf(p: float, dof: int) -> float:
    """The chi-squared upper quantile for an even number of degrees of freedom (closed-form tail)."""
    assert dof % 2 == 0 and dof > 0

    def sf(x: float) -> float:
        term, total = 1.0, 1.0
        for k in range(1, dof // 2):
            term *= x / 2 / k
            total += term
        return math.exp(-x / 2) * total

    lo, hi = 0.0, 1.0
    while sf(hi) > p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if sf(mid) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


T = chi2_isf(0.01, BINS - 1)


def kl_statistic(p_hat: np.ndarray, hypotheses: np.ndarray) -> np.ndarray:
    """``2 W KL(p_hat || q)`` for each row q (scipy.stats.entropy's conventions: both normalised,
    0 log 0 = 0, infinite where p_hat has mass q lacks)."""
    p = p_hat / p_hat.sum()
    q = hypotheses / hypotheses.sum(axis=1, keepdims=True)
    has = p > 0
    with np.errstate(divide="ignore"):
        terms = np.where(q[:, has] > 0, p[has] * np.log(p[has] / np.where(q[:, has] > 0, q[:, has], 1.0)), np.inf)
    return 2 * W * terms.sum(axis=1)


class RelativeEntropy:
    def __init__(self, input_min: float, input_max: float, probation: int, *, py2_ints: bool = False) -> None:
        self.input_min = input_min
        self.py2_ints = py2_ints
        self.step = (input_max - input_min) // BINS if py2_ints else (input_max - input_min) / BINS
        self.bins: deque[int] = deque(maxlen=W)
        self.hypotheses = np.empty((0, BINS))
        self.counts: list[int] = []

    def quantise(self, value: float) -> int:
        if self.py2_ints:
            return int((value - self.input_min) // self.step)
        return math.ceil((value - self.input_min) / self.step)

    def frequencies(self) -> np.ndarray:
        """np.histogram(bins, bins=5, range=(0, 5), density=True) of the window's quantised values."""
        counts = np.zeros(BINS)
        for b in self.bins:
            if 0 <= b <= BINS:
                counts[min(b, BINS - 1)] += 1
        return counts / counts.sum()

    def handle_record(self, timestamp: datetime, value: float) -> float:
        if self.step == 0.0:
            return 0.0
        self.bins.append(self.quantise(value))
        if len(self.bins) < W:
            return 0.0
        p_hat = self.frequencies()
        if self.counts:
            stats = kl_statistic(p_hat, self.hypotheses)
            best = int(np.argmin(stats))
            if stats[best] < T:
                self.counts[best] += 1
                return 0.0  # NAB's "count <= 1" test cannot hold after the increment
        self.hypotheses = np.vstack([self.hypotheses, p_hat])
        first = not self.counts
        self.counts.append(1)
        return 0.0 if first else 1.0
