"""Per-source monitors: the detectors that apply to one device or camera, and their episodes.

A monitor owns the detector objects of one source and runs them causally: every detector
scores a reading before any learns from it, and the learned ones skip readings judged
anomalous (so a flood does not become the new normal) unless the anomaly has lasted so long
that it is the new normal: ``RELEARN_AFTER_S`` of event time and more than
``RELEARN_MIN_READINGS`` readings (a reading count alone made a 1 Hz sensor's flood "normal"
after 200 s and a half-hourly one's after four days).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from streams.detectors.base import Finding
from streams.detectors.baseline import SeasonalBaseline, SeasonalProfile
from streams.detectors.camera import LABEL_POLICY, CameraLabel, CountBaseline
from streams.detectors.change import Cusum
from streams.detectors.episode import Episode
from streams.detectors.faults import Cadence, Flatline, PhysicalRange
from streams.detectors.limits import StaticLimits
from streams.detectors.rate import RateOfChange

#: an anomalous run this long in event time (and longer than RELEARN_MIN_READINGS readings) is
#: the new normal: the guarded detectors learn it (about the old 200 readings at a 1-minute cadence)
RELEARN_AFTER_S = 3 * 3600.0
RELEARN_MIN_READINGS = 20
SILENCE = "silence"

#: which direction of a learned deviation matters per kind (+1 high, -1 low, 0 both)
BASELINE_SIDE: dict[str, int] = {
    "water_level": 1, "rainfall": 1, "pm25": 1, "noise": 1, "temperature": 1, "smoke": 1, "gas": 1,
    "traffic_speed": -1, "occupancy": 1, "traffic_flow": 0, "power": -1, "vibration": 1,
}
#: detectors that must not learn from anomalous readings
_GUARDED = (SeasonalBaseline, Cusum)


class Monitor:
    """Detectors + episodes of one source. ``step`` handles one value at event time ``t``."""

    __slots__ = ("source", "kind", "detectors", "episodes", "anomalous_run", "anomalous_since", "cadence", "silent_since",
                 "_scores")

    def __init__(self, source: str, kind: str, detectors: Iterable) -> None:
        self.source, self.kind = source, kind
        self.detectors = list(detectors)
        self.episodes = [Episode(d.rule) for d in self.detectors]
        self._scores = [0.0] * len(self.detectors)
        self.anomalous_run = 0
        self.anomalous_since: float | None = None  # event time of the current anomalous run's first reading
        self.cadence = Cadence()
        self.silent_since: float | None = None  # last_t of the silence already reported

    def step(self, t: float, x: float, out: list[Finding]) -> None:
        out.extend(self.silence_ended(t))
        scores = self._scores
        top = 0.0
        for i, (d, ep) in enumerate(zip(self.detectors, self.episodes)):
            s, why = d.score_one(t, x)
            scores[i] = s
            top = max(top, s)
            f = ep.update(d.name, self.source, self.kind, t, x, s, why)
            if f is not None:
                out.append(f)
        stale = self._stale(t, top >= 0.5)
        for d, s in zip(self.detectors, scores):
            if s < 0.5 or stale or not isinstance(d, _GUARDED):
                d.learn_one(t, x)
            elif isinstance(d, Cusum):
                d.learn_guarded(t, x)
        self.cadence.seen(t)

    def _stale(self, t: float, anomalous: bool) -> bool:
        """Count the anomalous run; True once it has lasted so long that it is the new normal."""
        if not anomalous:
            self.anomalous_run, self.anomalous_since = 0, None
            return False
        self.anomalous_run += 1
        if self.anomalous_since is None:
            self.anomalous_since = t
        return self.anomalous_run > RELEARN_MIN_READINGS and t - self.anomalous_since >= RELEARN_AFTER_S

    def pending(self) -> bool:
        """Some episode is about to open (its state must not be lost in a restart)."""
        return any(e.pending_since is not None and not e.is_open for e in self.episodes)

    def step_many(self, t: np.ndarray, x: np.ndarray, out: list[Finding]) -> None:
        """Batch form: the same as ``step`` on each value in order (exactly, not approximately)."""
        for ti, xi in zip(t.tolist(), x.tolist()):
            self.step(ti, xi, out)

    # ------------------------------------------------------------------ silence (event time)

    def silence_started(self, watermark: float) -> Finding | None:
        """A silence finding once the watermark passed this source's deadline (once per silence)."""
        deadline = self.cadence.deadline()
        last = self.cadence.last_t
        if deadline is None or watermark < deadline or self.silent_since == last:
            return None
        self.silent_since = last
        return Finding(SILENCE, self.source, self.kind, deadline, None, 0.6, last,
                       f"no reading since {last:.0f} (usual gap {self.cadence.gaps.level:.0f} s)")

    def silence_ended(self, t: float) -> list[Finding]:
        """A reading arrived: report the silence it ends (also when no watermark saw it begin)."""
        out: list[Finding] = []
        deadline = self.cadence.deadline()
        if deadline is not None and t > deadline:
            f = self.silence_started(t)
            if f is not None:
                out.append(f)
        if self.silent_since is not None and self.silent_since == self.cadence.last_t:
            out.append(Finding(SILENCE, self.source, self.kind, t, None, 0.0, self.silent_since,
                               "reporting again", active=False))
            self.silent_since = None
        return out

    # ------------------------------------------------------------------ state

    def state(self) -> list:
        return [[d.state() for d in self.detectors], [e.state() for e in self.episodes],
                self.anomalous_run, self.cadence.state(), self.silent_since, self.anomalous_since]

    def restore(self, s: list) -> None:
        for d, ds in zip(self.detectors, s[0]):
            d.restore(ds)
        for e, es in zip(self.episodes, s[1]):
            e.restore(es)
        self.anomalous_run = s[2]
        self.cadence.restore(s[3])
        self.silent_since = s[4]
        self.anomalous_since = s[5] if len(s) > 5 else None  # (checkpoints before 2026-12-07: from the next reading)


def sensor_monitor(device: str, kind: str, limits: dict[str, float], utc_offset_s: float) -> Monitor:
    """The detectors a sensor of ``kind`` gets (unknown kinds get the generic ones)."""
    dets: list = [PhysicalRange(kind), Flatline()]
    if limits:
        dets.append(StaticLimits(limits.get("warning"), limits.get("alarm")))
    profile = SeasonalProfile(utc_offset_s)
    side = BASELINE_SIDE.get(kind, 0)
    base = SeasonalBaseline(utc_offset_s, side=side, second=profile)
    dets += [base, Cusum(profile=profile, fallback=base, side=side), RateOfChange(kind)]
    return Monitor(device, kind, dets)


def label_monitor(camera: str, label: str) -> Monitor:
    return Monitor(f"{camera}", "camera", [CameraLabel(label)])


def count_monitor(camera: str, label: str, utc_offset_s: float) -> Monitor:
    return Monitor(camera, "camera", [CountBaseline(label, utc_offset_s)])


CAMERA_LABELS = frozenset(LABEL_POLICY)
