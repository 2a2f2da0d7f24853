"""NAB scoring, reimplemented from the benchmark's rules (see the data's README).

Per file: the first 15 % (at most 750 rows) is probation. Inside a window only the first
detection counts, weighted by a scaled sigmoid of its position (early is better); a missed
window costs A_FN; a detection outside the windows costs A_FP scaled by its distance past the
previous window. The threshold is optimised once per profile over the whole corpus; scores are
normalised so that the null detector gets 0 and the perfect one 100.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from citybrain.exceptions import CitybrainError


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    tp: float
    fn: float
    fp: float


PROFILES = (Profile("standard", 1.0, 1.0, 0.11), Profile("reward_low_FP", 1.0, 1.0, 0.22),
            Profile("reward_low_FN", 1.0, 2.0, 0.11))


def f(y: float) -> float:
    """NAB's scaled sigmoid."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass(frozen=True, slots=True)
class Series:
    """One scored file: anomaly scores and its windows as row index ranges (inclusive)."""

    name: str
    scores: np.ndarray
    windows: tuple[tuple[int, int], ...]
    probation: int


def probation(n: int) -> int:
    """NAB's probationary period of an n-row file: 15 %, at most 750 rows, never scored."""
    return min(int(0.15 * n), 750)


def point_worths(s: Series, rows: list[int], p: Profile) -> Iterator[tuple[int, float]]:
    """For each of ``rows`` (ascending): its window's index (-1 outside every window) and its worth.

    Inside a window, the weight a first detection there earns (early is better); outside, the
    false positive's cost, scaled by the distance past the previous window (-A_FP before any).
    """
    k = 0
    for i in rows:
        while k < len(s.windows) and s.windows[k][1] < i:
            k += 1
        if k < len(s.windows) and s.windows[k][0] <= i:
            lo, hi = s.windows[k]
            yield k, p.tp * f(-(hi - i + 1) / (hi - lo + 1)) / f(-1.0)
        elif k == 0:
            yield -1, -p.fp
        else:
            lo, hi = s.windows[k - 1]
            yield -1, p.fp * f((i - hi) / (hi - lo + 1))


def file_score(s: Series, threshold: float, p: Profile) -> float:
    hits = np.flatnonzero(s.scores >= threshold)
    total = 0.0
    detected: set[int] = set()
    for k, worth in point_worths(s, hits[hits >= s.probation].tolist(), p):
        if k < 0:
            total += worth
        elif k not in detected:  # only a window's first detection counts
            detected.add(k)
            total += worth
    return total - p.fn * (len(s.windows) - len(detected))


def normalised(series: list[Series], threshold: float, p: Profile) -> tuple[float, float]:
    """(raw total, normalised score) of a set of files at a threshold."""
    raw = sum(file_score(s, threshold, p) for s in series)
    return raw, normalise(raw, sum(len(s.windows) for s in series), p)


def normalise(raw: float, n_windows: int, p: Profile) -> float:
    """NAB's normalisation of a raw total over files holding ``n_windows`` windows."""
    null, perfect = -p.fn * n_windows, p.tp * n_windows
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0


def best_threshold(series: list[Series], p: Profile) -> float:
    """The threshold with the largest raw total over ``series`` (the lowest of equals), in one sweep.

    Rescoring every file at every distinct score is O(points x distinct scores): hours for a
    detector with continuous scores (a windowed Gaussian's ~130k). Here each scored point's worth
    is worked out once: a point outside the windows costs what :func:`file_score` charges it,
    whatever else fires; a window earns the weight of its earliest hit (or -A_FN). Lowering the
    threshold past a score adds that score's points, each changing the total in O(1), so one pass
    down the sorted scores finds the same threshold as rescoring (``tests/test_nab.py`` compares).
    """
    scores, worth, window = [], [], []
    n_windows = 0
    for s in series:
        idx = np.arange(s.probation, len(s.scores))
        idx = idx[s.scores[idx] > 0]
        for k, w in point_worths(s, idx.tolist(), p):
            window.append(n_windows + k if k >= 0 else -1)
            worth.append(w)
        scores.extend(s.scores[idx].tolist())
        n_windows += len(s.windows)
    total = best_raw = -p.fn * n_windows
    best = 1.01
    earliest: dict[int, float] = {}
    order = sorted(range(len(scores)), key=lambda j: -scores[j])
    for pos, j in enumerate(order):
        k = window[j]
        if k < 0:
            total += worth[j]
        elif k not in earliest:
            earliest[k] = worth[j]
            total += p.fn + worth[j]
        elif worth[j] > earliest[k]:  # an earlier hit in the same window
            total += worth[j] - earliest[k]
            earliest[k] = worth[j]
        last_of_score = pos + 1 == len(order) or scores[order[pos + 1]] != scores[j]
        if last_of_score and scores[j] <= 1.01 and total >= best_raw:
            best, best_raw = scores[j], total
    return best


def load(results: Path, data: Path, labels: Path | None = None) -> list[Series]:
    windows = read_labels(labels or data.parent / "combined_windows.json")
    out = []
    for key, wins in sorted(windows.items()):
        cat, fname = key.split("/")
        found = sorted((results / cat).glob(f"*_{fname}"))
        if not found:
            continue
        stamps, scores = [], []
        with open(found[0], newline="") as fh:
            for row in csv.DictReader(fh):
                stamps.append(row["timestamp"])
                scores.append(float(row["anomaly_score"]))
        out.append(scored(key, stamps, scores, wins))
    return out


def read_labels(label_file: Path) -> dict[str, list[list[str]]]:
    try:
        return json.loads(label_file.read_text())
    except (OSError, ValueError) as e:
        raise CitybrainError(f"cannot read the NAB labels {label_file} ({e}); --data must be the NAB data "
                             "directory, next to combined_windows.json") from None


def scored(key: str, stamps: list[str], scores: list[float], wins: list[list[str]]) -> Series:
    """One file's scores with its labelled windows (timestamps) turned into row ranges."""
    index = {datetime.fromisoformat(t): i for i, t in enumerate(stamps)}
    rows = sorted(index)
    spans = []
    for a, b in wins:
        ta, tb = datetime.fromisoformat(a), datetime.fromisoformat(b)
        inside = [index[t] for t in rows if ta <= t <= tb]
        if inside:
            spans.append((min(inside), max(inside)))
    n = len(scores)
    return Series(key, np.asarray(scores), tuple(spans), probation(n))


def report(results: Path, data: Path) -> dict[str, dict[str, float]]:
    """Normalised score per profile: overall (threshold optimised on all files) and by category."""
    series = load(results, data)
    out: dict[str, dict[str, float]] = {}
    for p in PROFILES:
        thr = best_threshold(series, p)
        row = {"threshold": thr, "all": normalised(series, thr, p)[1]}
        for cat in sorted({s.name.split("/")[0] for s in series}):
            sub = [s for s in series if s.name.startswith(cat + "/")]
            if any(s.windows for s in sub):
                row[cat] = normalised(sub, thr, p)[1]
            else:  # no windows: report the false-positive cost instead of a 0/0 score
                row[cat + " (raw)"] = normalised(sub, thr, p)[0]
        out[p.name] = row
    return out
