"""Calibrating the NAB subset against the full corpus with NAB's reference detectors.

Runs every detector of :data:`bench.nab_reference.REFERENCES` whose module is there (a missing one
is skipped with a note) and our own detector (default knobs) over the subset, in memory, and
scores them all with the same code (``streams.nab.scoring`` / ``crossval``). Per detector: the
in-sample score per profile (threshold optimised on all files, as NAB does), the held-out
standard score (threshold chosen without the scored file / category), points/s, and the
published full-corpus standard score. Then fits ``published = a + b * subset`` over the
reference detectors (least squares; on the in-sample standard score, and again on the held-out
file-out and category-out scores), prints the residuals and the leave-one-out prediction errors, and reads our
detector's subset score through the fit: a full-corpus estimate, +- the leave-one-out RMS error.
Last, a paired bootstrap over the files: in how many corpora drawn from these files ours beats
CAD OSE, the strongest reference.

Usage: flock /tmp/cb-bench.lock nice -n 19 .venv/bin/python bench/bench_nab_reference.py
       [--data DIR] [--only NAME,...] [--write DIR] [--python3] [--bootstrap N]

NAB's published scores come from its Python 2 runs, where dividing two integers floors: in a file
of integer values (pandas reads them as int64) that changes skyline's three-reading tail and
relativeEntropy's bins. The references run that way by default (``py2_ints`` for such files,
``python2`` where a detector models more of Python 2); ``--python3`` runs them as NAB's current
code reads under Python 3.

``--write DIR`` also writes NAB-format results, ``DIR/<name>/<category>/<name>_<file>.csv``
(scores at full precision), so ``citybrain nab-score --results DIR/<name> --data ...`` scores
a detector from files.
"""

from __future__ import annotations

import argparse
import csv
import functools
import inspect
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import numpy as np  # noqa: E402

from bench import bench_nab  # noqa: E402
from bench.nab_reference import REFERENCES, Reference  # noqa: E402
from citybrain.shared import nab_data  # noqa: E402
from streams.nab import crossval, scoring  # noqa: E402
from streams.nab.detector import NAME as OURS  # noqa: E402
from streams.nab.runner import score_series  # noqa: E402
from streams.nab.scoring import PROFILES, Series, normalised, scored  # noqa: E402


@dataclass(frozen=True, slots=True)
class Scored:
    name: str
    series: list[Series]
    points_per_s: float
    published: float | None


def run(name: str, files: list[crossval.LabelledFile],
        scorer: Callable[[crossval.LabelledFile], list[float]], published: float | None) -> Scored:
    """Score every file with ``scorer`` (timed alone, not the scoring) into NAB Series."""
    series, spent = [], 0.0
    for f in files:
        t0 = time.perf_counter()
        scores = scorer(f)
        spent += time.perf_counter() - t0
        series.append(scored(f.key, f.stamps, scores, f.windows))
    points = sum(len(f.vs) for f in files)
    return Scored(name, series, points / spent if spent else 0.0, published)


@functools.cache
def integer_valued(path: Path) -> bool:
    """Whether pandas reads the file's values as int64 (no value with a point or an exponent)."""
    with open(path, newline="") as fh:
        return all(not any(c in row["value"] for c in ".eE") for row in csv.DictReader(fh))


def reference_scorer(ref: Reference, data: Path, python2: bool) -> Callable[[crossval.LabelledFile], list[float]]:
    """Runs ``ref`` on a file. ``python2``: as NAB's Python 2 run did, where a detector models it
    (``py2_ints`` for a file of integers, ``python2``); otherwise as NAB's Python 3 code."""
    params = inspect.signature(ref.detector_class()).parameters

    def score(f: crossval.LabelledFile) -> list[float]:
        kw: dict[str, bool] = {}
        if "py2_ints" in params:
            kw["py2_ints"] = python2 and integer_valued(data / f.key)
        if "python2" in params:
            kw["python2"] = python2
        det = ref.make(min(f.vs), max(f.vs), scoring.probation(len(f.vs)), **kw)
        stamps = [datetime.fromisoformat(s) for s in f.stamps]
        return [det.handle_record(t, v) for t, v in zip(stamps, f.vs)]
    return score


def ours(f: crossval.LabelledFile) -> list[float]:
    return score_series(f.ts, f.vs)


def available(refs: tuple[Reference, ...]) -> list[Reference]:
    out = []
    for r in refs:
        try:
            r.detector_class()
        except ImportError as e:
            print(f"note: {r.name} skipped, bench/nab_reference/{r.module}.py does not import ({e})")
            continue
        out.append(r)
    return out


def figures(s: Scored) -> dict[str, float]:
    out = {}
    for p in PROFILES:
        out[p.name] = normalised(s.series, scoring.best_threshold(s.series, p), p)[1]
    out["file-out"] = crossval.nested({s.name: s.series}, crossval.by_file).score
    out["category-out"] = crossval.nested({s.name: s.series}, crossval.category).score
    return out


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line ``y = a + b x``."""
    n = len(xs)
    if n < 2:
        raise ValueError("a line needs two points")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("all x equal: no slope")
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def loo_errors(xs: list[float], ys: list[float]) -> list[float]:
    """Leave-one-out: each point's y minus its prediction by the line fitted to the others."""
    out = []
    for i in range(len(xs)):
        a, b = fit(xs[:i] + xs[i + 1:], ys[:i] + ys[i + 1:])
        out.append(ys[i] - (a + b * xs[i]))
    return out


def rms(v: list[float]) -> float:
    return math.sqrt(sum(e * e for e in v) / len(v))


def calibrate(label: str, key: str, refs: list[tuple[Scored, dict[str, float]]],
              target: tuple[Scored, dict[str, float]]) -> None:
    xs = [f[key] for _, f in refs]
    ys = [s.published for s, _ in refs]
    if len(refs) < 3:
        print(f"\n{label}: {len(refs)} reference detectors, too few for a fit with a leave-one-out error")
        return
    a, b = fit(xs, ys)
    loo = loo_errors(xs, ys)
    print(f"\n{label}: published = {a:.2f} + {b:.3f} * subset  ({len(refs)} reference detectors)")
    for (s, f), e in zip(refs, loo):
        print(f"  {s.name:18s} subset {f[key]:5.1f}  published {s.published:5.1f}  "
              f"fitted {a + b * f[key]:5.1f}  residual {s.published - a - b * f[key]:+5.1f}  leave-one-out {e:+5.1f}")
    err = rms(loo)
    pred = a + b * target[1][key]
    print(f"  leave-one-out RMS error {err:.1f}; {target[0].name} subset {target[1][key]:.1f} -> "
          f"full corpus {pred:.1f} +- {err:.1f} ({pred - err:.1f} ... {pred + err:.1f})")


def paired_bootstrap(ours: list[Series], theirs: list[Series], resamples: int, seed: int = 0) -> tuple[float, float]:
    """How often ours out-scores a reference on corpora of these files drawn with replacement.

    Each resample draws len(files) files with replacement, the same draw for both detectors, and
    scores both as NAB would (standard profile, the threshold optimised on the resample). Returns
    (share of resamples where ours is higher, median difference in points): the subset's
    sampling noise, which the calibration's error bar mixes with the subset's bias.
    """
    std = PROFILES[0]
    rng = np.random.default_rng(seed)
    wins, diffs = 0, []
    for _ in range(resamples):
        pick = rng.integers(0, len(ours), len(ours)).tolist()
        a, b = [ours[i] for i in pick], [theirs[i] for i in pick]
        if not any(s.windows for s in a):
            continue
        d = (normalised(a, scoring.best_threshold(a, std), std)[1]
             - normalised(b, scoring.best_threshold(b, std), std)[1])
        wins += d > 0
        diffs.append(d)
    return wins / len(diffs), float(np.median(diffs))


def write(out: Path, s: Scored, files: list[crossval.LabelledFile]) -> None:
    for f, series in zip(files, s.series):
        cat, fname = f.key.split("/")
        dest = out / s.name / cat / f"{s.name}_{fname}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score"])
            w.writerows(zip(f.stamps, f.vs, (repr(float(x)) for x in series.scores)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--only", help="comma-separated detector names (NAB's, e.g. skyline); ours is always run")
    ap.add_argument("--write", type=Path, help="also write NAB-format results files under this directory")
    ap.add_argument("--bootstrap", type=int, default=1000,
                    help="paired bootstrap resamples of the files, ours against CAD OSE (0: off)")
    ap.add_argument("--python3", action="store_true",
                    help="run the references as NAB's Python 3 code would, not as its Python 2 run that made the "
                         "published scores (integer files: floor division in skyline and relativeEntropy)")
    a = ap.parse_args()
    refs = REFERENCES
    if a.only:
        wanted = set(a.only.split(","))
        unknown = wanted - {r.name for r in refs}
        if unknown:
            ap.error(f"unknown detector(s) {sorted(unknown)}; known: {[r.name for r in refs]}")
        refs = tuple(r for r in refs if r.name in wanted)
    a.data = a.data or nab_data()
    files = crossval.read_labelled(a.data)
    points = sum(len(f.vs) for f in files)
    print(f"{len(files)} files, {points} points, {sum(len(f.windows) for f in files)} windows", flush=True)
    results: list[tuple[Scored, dict[str, float]]] = []
    for ref in available(refs):
        s = run(ref.name, files, reference_scorer(ref, a.data, not a.python3), ref.published_standard)
        results.append((s, figures(s)))
        print(f"{ref.name}: {s.points_per_s:,.0f} points/s; in-sample {bench_nab.in_sample(s.series)}; "
              f"held-out threshold {bench_nab.held_out({s.name: s.series})}", flush=True)
    own = run(OURS, files, ours, None)
    own_fig = figures(own)
    print(f"{OURS}: {own.points_per_s:,.0f} points/s; in-sample {bench_nab.in_sample(own.series)}; "
          f"held-out threshold {bench_nab.held_out({own.name: own.series})}", flush=True)
    if a.write:
        for s, _ in [*results, (own, own_fig)]:
            write(a.write, s, files)
        print(f"results written under {a.write}/<name>/; score one with "
              f"citybrain nab-score --results {a.write}/<name> --data {a.data}")

    print(f"\n{'detector':18s} {'standard':>8s} {'low_FP':>7s} {'low_FN':>7s} {'file-out':>8s} {'cat-out':>7s} "
          f"{'points/s':>9s} {'published':>9s}")
    for s, f in [*results, (own, own_fig)]:
        pub = f"{s.published:9.1f}" if s.published is not None else f"{'-':>9s}"
        print(f"{s.name:18s} {f['standard']:8.1f} {f['reward_low_FP']:7.1f} {f['reward_low_FN']:7.1f} "
              f"{f['file-out']:8.1f} {f['category-out']:7.1f} {s.points_per_s:9,.0f} {pub}")
    calibrate("fit on the in-sample standard score", "standard", results, (own, own_fig))
    calibrate("fit on the held-out (file-out) standard score", "file-out", results, (own, own_fig))
    calibrate("fit on the held-out (category-out) standard score", "category-out", results, (own, own_fig))
    if a.bootstrap:
        print(f"\npaired bootstrap over files ({a.bootstrap} resamples, standard, threshold optimised per resample):")
        for s, _ in results:
            if s.name != "contextOSE":  # the strongest reference; the others' dense scores cost ~0.1 s a sweep
                continue
            share, median = paired_bootstrap(own.series, s.series, a.bootstrap)
            print(f"  {OURS} vs {s.name:18s} ahead in {100 * share:5.1f} % of resamples, median lead {median:+.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
