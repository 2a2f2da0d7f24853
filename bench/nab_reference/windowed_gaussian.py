"""NAB's ``windowedGaussian`` detector: a reading's two-sided Gaussian distance from a sliding window.

The window holds up to 6,400 past readings (NAB's tuned size). A reading is scored against the
window's mean and population standard deviation *before* it is added, as ``1 - Q(|z|)`` with Q
the normal tail probability: 0.5 at the mean, approaching 1 far from it (the first reading,
with an empty window, scores 0). While the window is filling, every reading is appended and the
statistics recomputed; once it is full, readings gather in a buffer of 100 and the window slides
by the whole buffer at once, so the mean and spread are refreshed only every 100 readings. A
flat window gets a spread of 1e-6, so any departure from a constant scores about 1.

The file's min, max and probation are accepted for the common interface and not used.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

WINDOW = 6400
STEP = 100
FLAT_STD = 1e-6


def tail_probability(x: float, mean: float, std: float) -> float:
    """The normal Q function of a value's distance from the mean, folded onto the upper side."""
    if x < mean:
        x = 2 * mean - x  # NAB mirrors the value rather than taking |x - mean|; same up to rounding
    return 0.5 * math.erfc((x - mean) / std / math.sqrt(2))


class WindowedGaussian:
    def __init__(self, input_min: float, input_max: float, probation: int) -> None:
        self.window: list[float] = []
        self.buffer: list[float] = []
        self.mean = 0.0
        self.std = 1.0

    def handle_record(self, timestamp: datetime, value: float) -> float:
        score = 1.0 - tail_probability(value, self.mean, self.std) if self.window else 0.0
        if len(self.window) < WINDOW:
            self.window.append(value)
            self._refresh()
        else:
            self.buffer.append(value)
            if len(self.buffer) == STEP:
                self.window = self.window[STEP:] + self.buffer
                self.buffer = []
                self._refresh()
        return score

    def _refresh(self) -> None:
        w = np.asarray(self.window)
        self.mean = float(np.mean(w))
        self.std = float(np.std(w)) or FLAT_STD
