"""Scalar monitors vs the vectorised sensor bank (streams/vector) on the same batches.

Both start from the same warmed-up state (the bank is warmed, the scalar monitors are restored
from its checkpoints), then step the same batches: a few readings per device per batch, in the
stream core's order (event time, grouped by device). Prints readings/s of each and the ratio,
and checks that both gave the same findings and end in the same state.

Usage: python bench/bench_vector.py [--devices 2000 20000] [--per-device 3] [--batches 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from streams.monitor import Monitor
from streams.vector.bank import SensorBank

T0 = 1_795_339_200.0
CADENCE = 60.0
#: kind -> (level, noise sd, daily amplitude, limits)
KINDS = {
    "water_level": (1.0, 0.02, 0.05, {"warning": 2.0, "alarm": 3.0}),
    "rainfall": (2.0, 0.5, 0.0, {}),
    "traffic_speed": (50.0, 3.0, 15.0, {}),
    "traffic_flow": (800.0, 40.0, 400.0, {}),
    "pm25": (20.0, 2.0, 5.0, {"warning": 45.0}),
    "temperature": (18.0, 0.3, 4.0, {"alarm": 40.0}),
    "noise": (55.0, 2.0, 6.0, {}),
}


class City:
    """N devices of mixed kinds, each reporting every minute (with jitter); a few are flooding."""

    def __init__(self, n: int, flood_after: int, shuffled: bool, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        # bank row of each device: in name order, or shuffled (rows given in order of first arrival)
        self.row = self.rng.permutation(n) if shuffled else np.arange(n)
        kinds = list(KINDS)
        self.kind = [kinds[i % len(kinds)] for i in range(n)]
        self.level = np.array([KINDS[k][0] for k in self.kind])
        self.sd = np.array([KINDS[k][1] for k in self.kind])
        self.amp = np.array([KINDS[k][2] for k in self.kind])
        self.names = [f"dev-{i:05d}" for i in range(n)]
        self.flood = self.rng.random(n) < 0.02
        self.next_t = T0 + self.rng.uniform(0, CADENCE, n)
        self.k, self.flood_after = 0, flood_after

    def batch(self, per_device: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``per_device`` readings of every device, in the core's order: (rows, t, x)."""
        n = len(self.names)
        t = self.next_t[:, None] + CADENCE * np.arange(per_device) + self.rng.normal(0, 1, (n, per_device))
        self.next_t = t[:, -1] + CADENCE
        hour = (t / 3600.0) % 24
        x = (self.level[:, None] + self.amp[:, None] * np.sin(2 * np.pi * (hour - 8) / 24)
             + self.rng.normal(0, 1, (n, per_device)) * self.sd[:, None])
        self.k += per_device
        if self.k > self.flood_after:
            x[self.flood] += 25 * self.sd[self.flood, None]
        rows = np.repeat(np.arange(n), per_device)
        t, x = t.ravel(), x.ravel()
        order = np.argsort(t, kind="stable")
        order = order[np.argsort(rows[order], kind="stable")]  # event time, then grouped by device
        return self.row[rows[order]], t[order], x[order]


def scalar_run(monitors: list[Monitor], batches: list) -> tuple[float, list]:
    """Monitor.step_many per device group, as StreamCore._readings calls it (grouping precomputed)."""
    groups = []
    for rows, t, x in batches:
        cuts = np.flatnonzero(rows[1:] != rows[:-1]) + 1
        lo = np.concatenate(([0], cuts)).tolist()
        hi = np.concatenate((cuts, [rows.size])).tolist()
        groups.append([(monitors[int(rows[a])], t[a:b], x[a:b]) for a, b in zip(lo, hi, strict=True)])
    out: list = []
    start = time.perf_counter()
    for g in groups:
        for m, t, x in g:
            m.step_many(t, x, out)
    return time.perf_counter() - start, out


def bank_run(bank: SensorBank, batches: list) -> tuple[float, list]:
    out: list = []
    start = time.perf_counter()
    for rows, t, x in batches:
        out += bank.process(rows, t, x)
    return time.perf_counter() - start, out


def bench(n: int, per_device: int, n_batches: int, warmup: int, shuffled: bool) -> None:
    city = City(n, flood_after=warmup, shuffled=shuffled)  # floods start in the timed batches
    bank = SensorBank(0.0, capacity=n)
    for i in np.argsort(city.row).tolist():
        assert bank.add(city.names[i], city.kind[i], KINDS[city.kind[i]][3]) == city.row[i]
    t0 = time.perf_counter()
    for _ in range(warmup // per_device):
        bank.process(*city.batch(per_device))
    warm_s = time.perf_counter() - t0
    monitors = [bank.monitor(i) for i in range(n)]
    batches = [city.batch(per_device) for _ in range(n_batches)]
    readings = sum(b[0].size for b in batches)
    s_time, s_out = scalar_run(monitors, batches)
    v_time, v_out = bank_run(bank, batches)
    same = s_out == v_out and all(bank.state(i) == monitors[i].state() for i in range(0, n, max(1, n // 500)))
    print(f"{n:>6} devices{' (rows shuffled)' if shuffled else ''} x {per_device} readings/batch x {n_batches} "
          f"batches = {readings} readings "
          f"(warm-up {warmup}/device: {n * (warmup // per_device) * per_device / warm_s:,.0f} readings/s)")
    print(f"   scalar Monitor.step : {readings / s_time:>12,.0f} readings/s  ({1e6 * s_time / readings:6.2f} us/reading)")
    print(f"   SensorBank.process  : {readings / v_time:>12,.0f} readings/s  ({1e6 * v_time / readings:6.2f} us/reading)")
    print(f"   ratio {s_time / v_time:.1f}x; findings {len(s_out)}, identical findings and state: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--per-device", type=int, default=3)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=240, help="readings per device before timing")
    ap.add_argument("--shuffled", action="store_true", help="bank rows not in the core's device order")
    a = ap.parse_args()
    for n in a.devices:
        bench(n, a.per_device, a.batches, a.warmup, a.shuffled)


if __name__ == "__main__":
    main()
