"""Event-time window assignment: tumbling, hopping and sliding windows.

Pure functions on event times (numpy), so any keyed state (per device, per grid) can be
windowed on the data's own clock. A window is ``[start, start + size)``; it is closed once the
watermark passes ``end + grace``.
"""

from __future__ import annotations

import numpy as np


def tumbling(t: np.ndarray, size: float) -> np.ndarray:
    """Start of the one tumbling window each event falls in."""
    return np.floor(np.asarray(t, float) / size) * size


def hopping(t: np.ndarray, size: float, step: float) -> np.ndarray:
    """Starts of the ``ceil(size/step)`` hopping windows each event falls in: shape (n, k).

    Entries are NaN where an event falls in fewer windows (never when size is a multiple of step).
    """
    t = np.asarray(t, float)
    k = int(np.ceil(size / step))
    last = np.floor(t / step) * step
    starts = last[:, None] - step * np.arange(k)[None, :]
    return np.where(starts + size > t[:, None], starts, np.nan)


def sliding_counts(t: np.ndarray, keys: np.ndarray, size: float) -> np.ndarray:
    """For each event, how many events of the same key fall in ``(t - size, t]`` (a sliding window).

    Events must be sorted by (key, t). Used e.g. for "how many sources spoke in the last N s".
    """
    t = np.asarray(t, float)
    if t.size == 0:
        return np.zeros(0, int)
    keys = np.asarray(keys)
    # per-key offset makes one global searchsorted work on concatenated sorted segments
    _, inv = np.unique(keys, return_inverse=True)
    span = (t.max() - t.min()) + 2 * size + 1.0
    shifted = t + inv * span
    lo = np.searchsorted(shifted, shifted - size, side="right")
    return np.arange(t.size) - lo + 1


def closed(window_end: float, watermark: float, grace_s: float) -> bool:
    return watermark >= window_end + grace_s
