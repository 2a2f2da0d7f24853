"""NAB on the development subset, honestly: in-sample, held-out and over a grid of knob settings.

One process, in memory (no results files). Prints, for the detector's defaults and, as the
baselines in the same run, the detector of 2026-12-02 (``ranks=0``: the Gaussian tail alone) and
the one before (``combine="either"``, gate 0.4, no ranks):

- the in-sample score per profile and category (threshold optimised on all files, as NAB does);
- held-out threshold choice: leave-one-file-out and leave-one-category-out;
- over a small grid of knob settings (gate x cooldown x history): each setting's in-sample
  standard score, their median / min / max (how much the score hangs on the knobs), and the
  nested held-out score (setting *and* threshold chosen without the scored file / category);
- NAB-mode throughput (points/s of the detector alone, defaults vs baseline);
- how the scores hang on ``ranks`` (the empirical-tail history: 1,000 ... 4,000 averages);
- false alarms on synthetic series without anomalies, of kinds the subset lacks (heavy-tailed
  noise, sparse counts, autocorrelated and drifting series): the subset cannot show how the
  detector fares on the held-back corpus' kinds of series, this shows where it alarms on noise.

Usage: flock /tmp/cb-bench.lock .venv/bin/python bench/bench_nab.py [--data DIR] [--no-grid]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from citybrain.shared import nab_data
from streams.nab import crossval
from streams.nab.detector import NabDetector, NabKnobs
from streams.nab.scoring import PROFILES, best_threshold, normalised

GATES, COOLDOWNS, HISTORIES = (0.4, 0.5, 0.6), (50, 100, 200), (300, 500, 1000)
BASELINES = (("2026-12-02 detector (no ranks)", NabKnobs(ranks=0)),
             ("previous detector", NabKnobs(gate=0.4, combine="either", ranks=0)))
RANKS = (1000, 1500, 2500, 3000, 4000)


def in_sample(series) -> str:
    cells = []
    for p in PROFILES:
        thr = best_threshold(series, p)
        cats = {c: [s for s in series if crossval.category(s) == c] for c in sorted({crossval.category(s) for s in series})}
        by_cat = " ".join(f"{c}={normalised(v, thr, p)[1]:.1f}" for c, v in cats.items() if any(s.windows for s in v))
        cells.append(f"{p.name} {normalised(series, thr, p)[1]:.1f} ({by_cat})")
    return "; ".join(cells)


def held_out(settings) -> str:
    cells = []
    for p in PROFILES:
        f = crossval.nested(settings, crossval.by_file, p)
        c = crossval.nested(settings, crossval.category, p)
        cats = " ".join(f"{k}={v:.1f}" for k, v in c.groups.items())
        cells.append(f"{p.name}: file-out {f.score:.1f}, category-out {c.score:.1f} ({cats})")
    return "; ".join(cells)


#: no-anomaly series, 15,000 points at 5 minutes (a realTweets-sized file); every report is false
SYNTHETIC_N = 15_000


def synthetic(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = SYNTHETIC_N
    daily = np.sin(2 * np.pi * np.arange(n) / 288)
    ar = np.zeros(n)
    noise = rng.normal(0, 1, n)
    for i in range(1, n):
        ar[i] = 0.95 * ar[i - 1] + noise[i]
    return {"gauss_daily": 50 + 10 * daily + rng.normal(0, 2, n),
            "poisson_daily": rng.poisson(5 + 4 * daily).astype(float),
            "poisson_sparse": rng.poisson(0.5, n).astype(float),
            "quantised": rng.choice([2.0, 2.1, 2.2], n, p=[0.6, 0.3, 0.1]),
            "lognormal": rng.lognormal(0, 1, n),
            "ar1_0.95": ar,
            "random_walk": np.cumsum(rng.normal(0, 1, n))}


def false_alarms(knobs: NabKnobs, seeds: int = 3) -> str:
    """Reports after the probation (750 points) per series, averaged over ``seeds`` draws."""
    counts: dict[str, float] = {}
    ts = (300.0 * np.arange(SYNTHETIC_N)).tolist()
    for seed in range(seeds):
        for kind, xs in synthetic(np.random.default_rng(seed)).items():
            det = NabDetector(knobs)
            scores = [det.score_learn_one(t, x) for t, x in zip(ts, xs.tolist())]
            counts[kind] = counts.get(kind, 0.0) + sum(s > 0 for s in scores[750:]) / seeds
    return f"total {sum(counts.values()):.1f} (" + " ".join(f"{k}={v:.1f}" for k, v in counts.items()) + ")"


def name(k: NabKnobs) -> str:
    return f"{k.combine} gate={k.gate} cooldown={k.cooldown} history={k.history} ranks={k.ranks}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--no-grid", action="store_true", help="only the defaults and the baseline")
    a = ap.parse_args()
    a.data = a.data or nab_data()
    files = crossval.read_labelled(a.data)
    points = sum(len(f.vs) for f in files)
    print(f"{len(files)} files, {points} points, {sum(len(f.windows) for f in files)} windows")
    for label, knobs in (("defaults", NabKnobs()), *BASELINES):
        t0 = time.perf_counter()
        series = crossval.score_labelled(files, knobs)
        pps = points / (time.perf_counter() - t0)
        print(f"\n{label}: {name(knobs)}; {pps:,.0f} points/s (incl. building the score arrays)")
        print("  in-sample:", in_sample(series))
        print("  held-out threshold:", held_out({name(knobs): series}))
        print(f"  false alarms per {SYNTHETIC_N:,}-point no-anomaly series:", false_alarms(knobs), flush=True)
    if a.no_grid:
        return 0
    ranked = {}
    for r in RANKS:
        k = NabKnobs(ranks=r)
        ranked[name(k)] = series = crossval.score_labelled(files, k)
        print(f"  {name(k)}: in-sample {in_sample(series)}; held-out threshold: {held_out({name(k): series})}; "
              f"false alarms {false_alarms(k)}", flush=True)
    ranked[name(NabKnobs())] = crossval.score_labelled(files, NabKnobs())
    print(f"ranks chosen per fold among {len(ranked)} settings: {held_out(ranked)}", flush=True)
    for combine in ("joint", "either"):
        grid = {}
        std = PROFILES[0]
        for gate, cooldown, history in itertools.product(GATES, COOLDOWNS, HISTORIES):
            k = NabKnobs(gate=gate, cooldown=cooldown, history=history, combine=combine)
            series = crossval.score_labelled(files, k)
            grid[name(k)] = series
            print(f"  {name(k)}: standard {normalised(series, best_threshold(series, std), std)[1]:.1f}", flush=True)
        scores = [normalised(s, best_threshold(s, std), std)[1] for s in grid.values()]
        f = crossval.nested(grid, crossval.by_file)
        c = crossval.nested(grid, crossval.category)
        print(f"{combine}, {len(grid)} settings: in-sample standard median {statistics.median(scores):.1f}, "
              f"min {min(scores):.1f}, max {max(scores):.1f}; nested held-out standard: file-out {f.score:.1f}, "
              f"category-out {c.score:.1f} ({' '.join(f'{k}={v:.1f}' for k, v in c.groups.items())}); "
              f"category-out picks: {sorted(set(c.picks.values()))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
