"""How cost grows with the city: 1k -> 5k -> 20k -> 50k devices (as many grids, a camera per ten).

    python bench/bench_growth.py [--sizes 1000,5000,20000,50000] [--rounds 3]

For each size, in one process and one run:
- loading the city file (parse, validate, place every device in its grid): time and peak memory;
- the ingest edge (parse + validate a SenML message from any device): microseconds per message;
- the stream core (every sensor reports once per round, columnar batches per partition):
  microseconds per reading in steady state, the one-off cost of a device's first reading
  (its detectors are created), and the memory of the detector state per device.

The baseline is the smallest city of the same run: ``x`` columns are per-device (or per-message)
cost divided by the smallest city's, so 1.0 means cost grows linearly with the city.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

from citybrain.city import load_city
from citybrain.citygen import make_city
from citybrain.clock import ManualClock
from citybrain.kafka import partition_for
from citybrain.records import SignalBatch
from citybrain.settings import Settings
from ingest.edge import Edge
from streams.core import StreamCore

T0 = 1_795_000_000.0


def measure(n: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "city.json"
        p.write_text(json.dumps(make_city(grids=n, sensors=n, cameras=max(n // 10, 1))))
        gc.collect()
        t = time.perf_counter()
        city = load_city(p)
        load_s = time.perf_counter() - t
        tracemalloc.start()  # a second load for memory: tracing slows the first one's clock
        load_city(p)
        load_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    sensors = list(city.sensors())
    settings = Settings()

    # ingest edge: one message per device, in random order
    edge = Edge(city, settings, ManualClock(T0 + 10))
    rng = random.Random(1)
    sample = rng.sample(sensors, min(len(sensors), 20_000))
    msgs = [(f"city/sensors/{s.id}", json.dumps([{"bn": f"{s.id}:", "bt": T0 + k % 5, "n": s.kind, "u": s.unit,
                                                   "v": 1.0}]).encode()) for k, s in enumerate(sample)]
    t = time.perf_counter()
    for topic, payload in msgs:
        edge.parse(topic, payload)
    edge_us = (time.perf_counter() - t) / len(msgs) * 1e6

    # stream core: every sensor once per round (60 s of event time apart)
    core = StreamCore(settings, city, ManualClock(T0))
    P = settings.partitions
    by_part: dict[int, list] = defaultdict(list)
    for s in sensors:
        by_part[partition_for(s.area, P)].append(s)
    gc.collect()
    tracemalloc.start()
    base_mem = tracemalloc.get_traced_memory()[0]
    readings, elapsed = 0, 0.0
    for r in range(rounds + 1):  # round 0 creates every device's detectors: timed apart
        if r == 1:
            first_us, readings, elapsed = elapsed / readings * 1e6, 0, 0.0
        ts = T0 + 60 * r
        for part, devs in by_part.items():
            b = SignalBatch(device=tuple(d.id for d in devs), name=tuple(d.kind for d in devs),
                            grid=tuple(d.area for d in devs), t=(ts,) * len(devs),
                            value=tuple(1.0 + 0.01 * (i % 7) for i in range(len(devs))),
                            ids=tuple(f"{d.id}-{r}" for d in devs))
            t = time.perf_counter()
            core.process(part, b)
            elapsed += time.perf_counter() - t
            readings += len(devs)
    state_mem = tracemalloc.get_traced_memory()[0] - base_mem
    tracemalloc.stop()
    return {"devices": len(city.devices), "grids": len(city.by_level("grid")), "load_s": load_s,
            "load_peak_mb": load_peak / 2**20, "edge_us": edge_us, "core_us": elapsed / readings * 1e6,
            "first_us": first_us,
            "state_kb_per_device": state_mem / len(sensors) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,5000,20000,50000")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rows = [measure(int(n), a.rounds) for n in a.sizes.split(",")]
    b = rows[0]
    print(f"{'devices':>8} {'grids':>7} {'load s':>7} {'x':>5} {'load MB':>8} {'edge us/msg':>12} {'x':>5} "
          f"{'core us/reading':>16} {'x':>5} {'first sight us':>15} {'state KB/device':>16}")
    for r in rows:
        lx = (r["load_s"] / r["devices"]) / (b["load_s"] / b["devices"])
        print(f"{r['devices']:>8} {r['grids']:>7} {r['load_s']:>7.2f} {lx:>5.2f} {r['load_peak_mb']:>8.0f} "
              f"{r['edge_us']:>12.1f} {r['edge_us'] / b['edge_us']:>5.2f} {r['core_us']:>16.1f} "
              f"{r['core_us'] / b['core_us']:>5.2f} {r['first_us']:>15.0f} {r['state_kb_per_device']:>16.2f}")


if __name__ == "__main__":
    main()
