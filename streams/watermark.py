"""Per-partition event-time watermark and the lateness policy.

watermark = max event time seen on the partition - ``allowed_lateness_s``. An event older than
the watermark but within ``grace_s`` of it is late but still processed (counted as ``late``);
one older than watermark - grace is too late: counted and dead-lettered (reason ``too_late``).
A batch carries no arrival order between its columns (readings, camera events, presence), so
its content counts as arriving together: it is judged against the watermark before the batch
and handled in event-time order; the watermark then moves to the batch's newest time. A
time-ordered feed therefore has the same late events however it is cut into batches.
"""

from __future__ import annotations

import numpy as np


class Watermark:
    __slots__ = ("allowed_lateness_s", "grace_s", "max_t")

    def __init__(self, allowed_lateness_s: float, grace_s: float, max_t: float = float("-inf")) -> None:
        self.allowed_lateness_s, self.grace_s, self.max_t = allowed_lateness_s, grace_s, max_t

    @property
    def value(self) -> float:
        return self.max_t - self.allowed_lateness_s

    def classify(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(late, too_late) masks for the event times of one batch; then advances the watermark.

        Non-finite times (NaN, -inf) are too late by construction and never move the watermark.
        """
        wm = self.value
        late = t < wm
        too_late = t < wm - self.grace_s
        ok = np.isfinite(t)
        if ok.any():
            self.max_t = max(self.max_t, float(t[ok].max()))
        return late & ~too_late, too_late | ~ok
