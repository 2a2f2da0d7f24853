"""Explanations of the bank's findings, worded and formatted exactly as the scalar detectors do.

Only readings that produce a finding need one (a few per thousand), so they are written in plain
Python from the round's arrays instead of being formatted for every reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Round:
    """The values of one round that the explanations quote (arrays of the round's length)."""

    x: np.ndarray
    low: np.ndarray
    high: np.ndarray
    flat_run: np.ndarray
    lo: np.ndarray  # the lower static limit (warning, else alarm; NaN: none)
    alarm: np.ndarray
    above: np.ndarray
    alarm_hit: np.ndarray
    has_e: np.ndarray  # the baseline had an expectation
    level: np.ndarray  # the baseline's own expectation
    b_level: np.ndarray  # the one its score used (its own or its second opinion's)
    spread: np.ndarray
    z: np.ndarray  # baseline z after the side rule
    p_has: np.ndarray  # the Cusum's profile had an expectation
    p_level: np.ndarray
    c_has: np.ndarray  # the Cusum had one (its profile's, else its fallback's), and its level
    c_level: np.ndarray
    dt: np.ndarray  # event time since the device's reading before (Cusum.dt)
    pos: np.ndarray
    neg: np.ndarray
    cusum: np.ndarray
    rate_ok: np.ndarray
    rate: np.ndarray
    rate_limit: np.ndarray
    rate_warm: np.ndarray
    rate_z: np.ndarray


def _range(c: Round, i: int) -> str:
    x, low, high = float(c.x[i]), float(c.low[i]), float(c.high[i])
    if low <= x <= high:
        return ""
    return f"{x:g} outside the physical range [{low:g}, {high:g}]"


def _flatline(c: Round, i: int) -> str:
    return f"stuck at {float(c.x[i]):g} for {int(c.flat_run[i])} readings"


def _flatline_or_empty(c: Round, i: int, score: float) -> str:
    return _flatline(c, i) if score else ""


def _limits(c: Round, i: int) -> str:
    x, lo, alarm = float(c.x[i]), float(c.lo[i]), float(c.alarm[i])
    if np.isnan(lo):
        return ""
    if not c.above[i]:
        return f"{x:g} below warning {lo:g}"
    if c.alarm_hit[i]:
        return f"{x:g} above alarm limit {alarm:g}"
    return f"{x:g} above warning limit {lo:g}"


def _baseline(c: Round, i: int) -> str:
    if not c.has_e[i]:
        return ""
    x, level, spread, z = float(c.x[i]), float(c.b_level[i]), float(c.spread[i]), float(c.z[i])
    return f"{x:g} vs usual {level:.3g} +- {spread:.2g} ({z:+.1f} spreads)"


def _change(c: Round, i: int) -> str:
    if not c.c_has[i]:
        return ""
    direction = "up" if c.pos[i] >= c.neg[i] else "down"
    return f"level shift {direction} from {float(c.c_level[i]):.3g} (cusum {float(c.cusum[i]):.1f})"


def _rate(c: Round, i: int) -> str:
    if not c.rate_ok[i]:
        return ""
    r, limit = float(c.rate[i]), float(c.rate_limit[i])
    if not np.isnan(limit):
        return f"rising {r:.3g}/min (limit {limit:g}/min)"
    if not c.rate_warm[i]:
        return ""
    return f"changing {r:+.3g}/min, {float(c.rate_z[i]):.1f} spreads faster than usual"


def explain(j: int, c: Round, i: int, score: float) -> str:
    """The explanation detector ``j`` (bank column order) gave for reading ``i`` of the round."""
    if j == 1:
        return _flatline_or_empty(c, i, score)
    return (_range, None, _limits, _baseline, _change, _rate)[j](c, i)
