"""Reference NAB detectors, reimplemented, to calibrate the development subset against the full corpus.

The subset's score of our detector says little about the held-back corpus on its own. NAB's
scoreboard publishes full-corpus standard scores for its reference detectors; run the same
algorithms over the subset with the same scoring, and the pairs (subset score, published score)
show how the subset maps to the full corpus, so our detector's subset score can be read as an
estimate with an error bar rather than a guess.

Each module here holds one detector, written from the algorithm (NAB's ``nab/detectors/``
sources and papers) with NAB's own parameters, and is registered in :data:`REFERENCES`.
Every detector follows :class:`ReferenceDetector`: constructed per file with NAB's base-class
inputs (the file's min and max value, which NAB's runner reads ahead of time, and the
probationary period), then fed one record at a time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class ReferenceDetector(Protocol):
    def handle_record(self, timestamp: datetime, value: float) -> float:
        """The anomaly score in [0, 1] for this record, learned from it afterwards."""


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference detector: where its class lives and its published full-corpus standard score."""

    name: str  # NAB's detector name, the results' file prefix
    module: str  # a module of this package
    cls: str
    published_standard: float

    def detector_class(self) -> type:
        """The detector's class (importing its module: ImportError while it is not there)."""
        return getattr(importlib.import_module(f"{__package__}.{self.module}"), self.cls)

    def make(self, input_min: float, input_max: float, probation: int, **options) -> ReferenceDetector:
        """A detector for one file; ``options`` are the class's own (e.g. ``py2_ints``, ``python2``)."""
        return self.detector_class()(input_min, input_max, probation, **options)


# Published standard-profile scores on the full corpus (NAB scoreboard, quoted in the data's README).
REFERENCES = (
    Reference("windowedGaussian", "windowed_gaussian", "WindowedGaussian", 39.6),
    Reference("skyline", "skyline", "EtsySkyline", 35.7),
    Reference("relativeEntropy", "relative_entropy", "RelativeEntropy", 54.6),
    Reference("knncad", "knncad", "KnnCad", 58.0),
    Reference("contextOSE", "cad_ose", "CadOse", 69.9),
)
