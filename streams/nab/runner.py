"""Run the NAB detector over NAB CSV files, one point at a time, writing NAB-format results.

Input ``DATA/<category>/<file>.csv`` (``timestamp,value``); output
``OUT/<category>/<detector>_<file>.csv`` (``timestamp,value,anomaly_score``).
"""

from __future__ import annotations

import csv
import time
from datetime import UTC, datetime
from pathlib import Path

from streams.nab.detector import NAME, NabDetector, NabKnobs


def read_series(path: Path) -> tuple[list[str], list[float], list[float]]:
    stamps, ts, vs = [], [], []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            stamps.append(row["timestamp"])
            ts.append(datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC).timestamp())
            vs.append(float(row["value"]))
    return stamps, ts, vs


def score_series(ts: list[float], vs: list[float], knobs: NabKnobs = NabKnobs()) -> list[float]:
    det = NabDetector(knobs)
    return [det.score_learn_one(t, v) for t, v in zip(ts, vs)]


def data_files(data: Path) -> list[Path]:
    return sorted(p for p in data.glob("*/*.csv"))


def run(data: Path, out: Path) -> dict[str, float]:
    """Score every file; returns {"points", "seconds", "points_per_s"}."""
    points, spent = 0, 0.0
    for f in data_files(data):
        stamps, ts, vs = read_series(f)
        t0 = time.perf_counter()
        scores = score_series(ts, vs)
        spent += time.perf_counter() - t0
        points += len(vs)
        dest = out / f.parent.name / f"{NAME}_{f.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score"])
            w.writerows(zip(stamps, vs, (round(s, 6) for s in scores)))
    return {"points": points, "seconds": spent, "points_per_s": points / spent if spent else 0.0}
