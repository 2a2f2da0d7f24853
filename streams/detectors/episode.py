"""Turning a stream of scores into episodes: start, material change, end.

One state machine shared by every detector, so hysteresis, minimum duration and the quiet period
before "back to normal" mean the same thing everywhere. An episode opens when the score stays at
or above ``on`` for ``min_count`` readings spanning at least ``min_duration_s`` of event time, and
closes after ``quiet_s`` of event time below ``off`` (hysteresis: ``off`` < ``on``).
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.detectors.base import Finding


@dataclass(frozen=True, slots=True)
class EpisodeRule:
    on: float = 0.5
    off: float = 0.25
    min_count: int = 1
    min_duration_s: float = 0.0
    quiet_s: float = 300.0
    #: re-report an open episode when its score moved by this much (a material change)
    step: float = 0.2


class Episode:
    """Episode state of one (detector, source). O(1) memory."""

    __slots__ = ("rule", "pending_since", "pending_n", "open_since", "reported", "calm_since", "peak")

    def __init__(self, rule: EpisodeRule) -> None:
        self.rule = rule
        self.pending_since: float | None = None
        self.pending_n = 0
        self.open_since: float | None = None
        self.reported = 0.0
        self.calm_since: float | None = None
        self.peak = 0.0

    @property
    def is_open(self) -> bool:
        return self.open_since is not None

    def update(self, detector: str, source: str, kind: str, t: float, value: float | None,
               score: float, explanation: str) -> Finding | None:
        r = self.rule
        if self.open_since is None:
            if score < r.on:
                self.pending_since, self.pending_n = None, 0
                return None
            if self.pending_since is None:
                self.pending_since = t
            self.pending_n += 1
            if self.pending_n < r.min_count or t - self.pending_since < r.min_duration_s:
                return None
            self.open_since, self.reported, self.calm_since = self.pending_since, score, None
            self.peak = score
            return Finding(detector, source, kind, t, value, score, self.open_since, explanation)
        if score >= r.off:
            self.calm_since = None
            self.peak = max(self.peak, score)
            if abs(score - self.reported) >= r.step and score > self.reported:
                self.reported = score
                return Finding(detector, source, kind, t, value, score, self.open_since, explanation)
            return None
        if self.calm_since is None:
            self.calm_since = t
        if t - self.calm_since < r.quiet_s:
            return None
        started = self.open_since
        self.open_since, self.pending_since, self.pending_n, self.calm_since = None, None, 0, None
        return Finding(detector, source, kind, t, value, 0.0, started, f"back to normal: {explanation}", active=False)

    def close(self, detector: str, source: str, kind: str, t: float, explanation: str) -> Finding | None:
        """End an open episode now (e.g. the camera reported the object's end)."""
        if self.open_since is None:
            self.pending_since, self.pending_n = None, 0
            return None
        started = self.open_since
        self.open_since, self.pending_since, self.pending_n, self.calm_since = None, None, 0, None
        return Finding(detector, source, kind, t, None, 0.0, started, explanation, active=False)

    def state(self) -> list:
        return [self.pending_since, self.pending_n, self.open_since, self.reported, self.calm_since, self.peak]

    def restore(self, s: list) -> None:
        (self.pending_since, self.pending_n, self.open_since, self.reported, self.calm_since, self.peak) = s
