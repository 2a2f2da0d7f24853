"""KNN CAD (Ishimtsev, Burnaev et al., arXiv:1608.04585; numenta/NAB ``nab/detectors/knncad/``), reimplemented.

Inductive conformal anomaly detection over lag vectors:

- Each record from the 19th on gives the vector of the last ``dim = 19`` values.
- The vectors of the records before the probationary period's end are the *training* set. The
  non-conformity of a vector is the sum of its ``k = 27`` smallest squared Mahalanobis-like
  distances ``d^T S d`` to the training set, ``S = (X^T X)^-1`` of the training matrix ``X``
  (identity until first computed; recomputed when ``record % probation`` is 0 or
  ``int(probation / 2)``; a singular matrix keeps the previous one).
- At the first scored record the training vectors' own non-conformities (leaving themselves out)
  are the calibration scores. Every scored record's score is the share of calibration scores
  strictly below its own; its non-conformity then replaces the oldest calibration score, and
  from record ``2 * probation`` on the training set slides too (the oldest vector out, the oldest
  not yet used scored vector in: the training set lags the stream by ``probation`` records).
- After a score >= 0.9965 the next ``int(probation / 5)`` records output 0.5.

Records are counted from 1, as NAB's detector does; a record before the 19th, or inside the
probationary period, scores 0.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np


class KnnCad:
    """NAB's knncad detector with NAB's parameters."""

    def __init__(self, input_min: float, input_max: float, probation: int, *, k: int = 27, dim: int = 19,
                 alarm: float = 0.9965) -> None:
        self.probation = probation
        self.k = k
        self.dim = dim
        self.alarm = alarm
        self.values = np.empty(max(1024, 2 * probation + dim))
        self.n = 0  # records seen (NAB's record_count)
        self.sigma = np.eye(dim)
        self.calibration: np.ndarray | None = None  # the last len(training) non-conformities, oldest first
        self.cal_start = 0
        self.quiet = -1  # NAB's self.pred

    def _windows(self, first: int, last: int) -> np.ndarray:
        """The lag vectors of records ``first..last`` (1-based counts), one a row."""
        return np.lib.stride_tricks.sliding_window_view(self.values[first - self.dim:last], self.dim)

    def _training(self) -> np.ndarray:
        last = max(self.probation - 1, self.n - self.probation - 1)
        return self._windows(last - (self.probation - self.dim) + 1, last)

    def _nonconformity(self, train: np.ndarray, items: np.ndarray, leave_self_out: bool = False) -> np.ndarray:
        k = self.k + (1 if leave_self_out else 0)
        out = np.empty(len(items))
        for i, item in enumerate(items):
            d = train - item
            dist = np.einsum("ij,ij->i", d @ self.sigma, d)
            out[i] = np.partition(dist, k)[:k].sum()
        return out

    def handle_record(self, timestamp: datetime, value: float) -> float:
        if self.n == len(self.values):
            self.values = np.concatenate([self.values, np.empty(len(self.values))])
        self.values[self.n] = value
        self.n += 1
        n, p = self.n, self.probation
        if n < self.dim or n < p:
            return 0.0
        train = self._training()
        if n % p == 0 or n % p == int(p / 2):
            try:
                self.sigma = np.linalg.inv(np.dot(train.T, np.array(train)))
            except np.linalg.LinAlgError:
                pass  # NAB prints "Singular Matrix" and keeps the previous one
        if self.calibration is None:
            self.calibration = self._nonconformity(train, train, leave_self_out=True)
        new = self._nonconformity(train, self._windows(n, n))[0]
        cal = self.calibration
        result = float(np.count_nonzero(cal < new)) / len(cal)
        cal[:-1] = cal[1:]
        cal[-1] = new
        if self.quiet > 0:
            self.quiet -= 1
            return 0.5
        if result >= self.alarm:
            self.quiet = int(p / 5)
        return result
