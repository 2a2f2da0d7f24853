"""Elementwise twins of the scalar helpers, written to give bit-identical results.

The scalar detectors only use +, -, *, /, abs, floor division and the builtins ``min``/``max``
(no exp or log), so the same operations in the same order on float64 arrays give the same bits.
The one trap is ``min``/``max``: Python's ``max(a, b)`` returns ``a`` unless ``b > a`` (so
``max(0.0, -0.0)`` is ``0.0`` and a NaN in second place is ignored), while ``np.maximum``
propagates NaN and may pick either zero. :func:`pmax` / :func:`pmin` reproduce the builtins.
"""

from __future__ import annotations

import numpy as np


def pmax(a, b):
    """Python's ``max(a, b)`` elementwise: ``b`` only where ``b > a``."""
    return np.where(b > a, b, a)


def pmin(a, b):
    """Python's ``min(a, b)`` elementwise: ``b`` only where ``b < a``."""
    return np.where(b < a, b, a)


def squash(z: np.ndarray, z0: float = 3.0, z1: float = 8.0) -> np.ndarray:
    """:func:`streams.detectors.base.squash` elementwise."""
    return np.where(z <= z0, 0.0, pmin(1.0, (z - z0) / (z1 - z0)))


def winsorised_step(level: np.ndarray, spread: np.ndarray, n: np.ndarray, x: np.ndarray, alpha: float,
                    clip: float = 3.0, track_level: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`streams.detectors.base.winsorised_step` elementwise (``n`` may be float or int)."""
    a = pmax(alpha, 1.0 / (n + 1))
    d = x - level
    s = np.where(spread > 0, spread, np.abs(d))
    lim = np.where(s > 0, clip * s, np.abs(d))
    d = pmax(-lim, pmin(lim, d))
    new_spread = spread + a * (np.abs(d) * 1.2533 - spread)
    first = n == 0
    if track_level:
        return np.where(first, x, level + a * d), np.where(first, 0.0, new_spread)
    return level, np.where(first, np.abs(x - level) * 1.2533, new_spread)
