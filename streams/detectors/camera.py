"""Camera analytics: labelled detections (fire, smoke, accident, intrusion) and object counts.

A label counts once its score holds above the label's threshold for the label's minimum
duration (a fire at >= 0.8 for 10 s raises on its own). Counts (person, car) are judged against
the camera's learned seasonal baseline, high side only: a crowd surge, a traffic build-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.detectors.baseline import SeasonalBaseline
from streams.detectors.episode import EpisodeRule


@dataclass(frozen=True, slots=True)
class LabelPolicy:
    threshold: float
    min_duration_s: float


LABEL_POLICY: dict[str, LabelPolicy] = {
    "fire": LabelPolicy(0.7, 10.0),
    "smoke": LabelPolicy(0.7, 10.0),
    "accident": LabelPolicy(0.6, 0.0),
    "intrusion": LabelPolicy(0.6, 5.0),
}


class CameraLabel:
    """Score of one camera label; the duration rule is carried by :attr:`rule`."""

    __slots__ = ("name", "label", "policy", "rule")

    def __init__(self, label: str) -> None:
        self.name = f"camera_{label}"
        self.label = label
        self.policy = LABEL_POLICY[label]
        self.rule = EpisodeRule(on=0.5, off=0.5, min_count=1, min_duration_s=self.policy.min_duration_s,
                                quiet_s=60.0, step=0.1)

    def score_one(self, t: float, x: float) -> tuple[float, str]:
        if x < self.policy.threshold:
            return 0.0, f"{self.label} score {x:.2f}"
        # threshold maps to 0.5, a certain detection to 1.0
        s = 0.5 + 0.5 * (x - self.policy.threshold) / max(1e-9, 1.0 - self.policy.threshold)
        return min(1.0, s), f"camera sees {self.label} (score {x:.2f})"

    def learn_one(self, t: float, x: float) -> None:
        """Thresholds are policy, not learned."""

    def state(self) -> list:
        return []

    def restore(self, s: list) -> None:
        pass


class CountBaseline(SeasonalBaseline):
    """Object counts of one camera and label against their usual level at this hour."""

    rule = EpisodeRule(on=0.5, off=0.2, min_count=3, quiet_s=600.0)
    __slots__ = ("name",)

    def __init__(self, label: str, utc_offset_s: float = 0.0) -> None:
        super().__init__(utc_offset_s=utc_offset_s, warmup=20, side=1)
        self.name = f"counts_{label}"
