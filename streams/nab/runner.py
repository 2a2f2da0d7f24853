"""Run the NAB detector over NAB CSV files, one point at a time, writing NAB-format results.

Input ``DATA/<category>/<file>.csv`` (``timestamp,value``); output
``OUT/<category>/<detector>_<file>.csv`` (``timestamp,value,anomaly_score``).
"""

from __future__ import annotations

import csv
import math
import time
from datetime import UTC, datetime
from pathlib import Path

from citybrain.exceptions import BadSeriesFile
from streams.nab.detector import NAME, NabDetector, NabKnobs

#: where the files that could not be read are listed, with the line and the problem
REJECTED = "rejected.csv"


def read_series(path: Path) -> tuple[list[str], list[float], list[float]]:
    """(timestamps as written, epoch seconds, values) of a NAB CSV file.

    Raises :class:`BadSeriesFile` naming the line and what is wrong there: a result file must have
    a score for every row in order, so a file with one unreadable row is not scored at all. Times
    may repeat or step back (NAB's own files do, at daylight-saving changes): scored as they come.
    """
    stamps, ts, vs = [], [], []
    try:
        with open(path, newline="") as fh:
            rows = csv.DictReader(fh)
            if not rows.fieldnames or not {"timestamp", "value"} <= set(rows.fieldnames):
                raise BadSeriesFile(path, 1, f"header {rows.fieldnames or []} has no 'timestamp' and 'value' columns")
            for line, row in enumerate(rows, start=2):
                stamps.append(_field(path, line, row, "timestamp"))
                ts.append(_timestamp(path, line, stamps[-1]))
                vs.append(_value(path, line, _field(path, line, row, "value")))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BadSeriesFile(path, 0, f"cannot read: {e}") from e
    if not vs:
        raise BadSeriesFile(path, 0, "no data rows")
    return stamps, ts, vs


def _field(path: Path, line: int, row: dict, name: str) -> str:
    v = row.get(name)
    if v is None or not v.strip():
        raise BadSeriesFile(path, line, f"no {name}")
    return v.strip()


def _timestamp(path: Path, line: int, text: str) -> float:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise BadSeriesFile(path, line, f"timestamp {text!r} is not 'YYYY-MM-DD HH:MM:SS'") from None


def _value(path: Path, line: int, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise BadSeriesFile(path, line, f"value {text!r} is not a number") from None
    if not math.isfinite(v):
        raise BadSeriesFile(path, line, f"value {text!r} is not finite")
    return v


def score_series(ts: list[float], vs: list[float], knobs: NabKnobs = NabKnobs()) -> list[float]:
    det = NabDetector(knobs)
    return [det.score_learn_one(t, v) for t, v in zip(ts, vs)]


def data_files(data: Path) -> list[Path]:
    return sorted(p for p in data.glob("*/*.csv"))


def run(data: Path, out: Path) -> dict:
    """Score every readable file; returns {"points", "seconds", "points_per_s", "rejected"}.

    A file that cannot be read is not scored: it is listed in ``rejected`` (its
    :class:`BadSeriesFile`) and in ``OUT/rejected.csv`` (file, line, problem), and the others go on.
    """
    points, spent = 0, 0.0
    rejected: list[BadSeriesFile] = []
    for f in data_files(data):
        try:
            stamps, ts, vs = read_series(f)
        except BadSeriesFile as e:
            rejected.append(e)
            continue
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
    if rejected:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / REJECTED, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "line", "problem"])
            w.writerows((e.path, e.line, e.problem) for e in rejected)
    return {"points": points, "seconds": spent, "points_per_s": points / spent if spent else 0.0, "rejected": rejected}
