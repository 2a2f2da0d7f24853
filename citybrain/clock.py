"""Clocks. Event time comes from the data; wall time comes from a clock that tests can drive.

Everything that needs "now" takes a :class:`Clock` so that escalation timers, horizons and
heartbeats are tested with :class:`ManualClock` instead of sleeps.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class WallClock:
    """The real clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to: for tests and deterministic replays."""

    __slots__ = ("_t",)

    def __init__(self, start: float = 1_795_339_350.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> float:
        self._t += seconds
        return self._t

    def set(self, t: float) -> None:
        self._t = float(t)


def iso(t: float) -> str:
    """Epoch seconds as an ISO 8601 UTC string with an explicit offset and no fraction (CAP's form)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))
