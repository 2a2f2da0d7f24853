"""The incident service under a warning storm: N warnings on the warnings topic at once -> incidents.

    python bench/bench_alerts.py [--warnings 2000,10000] [--code DIR] [--dump FILE] [--hold S]

Why: a city-wide event (typhoon, power cut) makes every sensor warn within a second; the
command center must turn that into incidents in well under a second or two.

The storm is what the stream worker's fusion makes of it: every sensor of the demo city (2,000,
384 grids) reports one active finding in a random order and ``streams.fusion.GridFusion`` fuses
them by grid and event (flood, fire, air pollution, traffic jam, ... each situation re-emitted
with the same id and one more source as it grows); for more than one wave's warnings the sensors
go back to normal (inactive warnings, resolution proposals) and the next wave starts an hour later.
The warnings are encoded up front and produced (aiokafka, key = grid, as the worker does) as fast
as the producer goes, to a private tansu broker (``bench.common.Brokers``, with a private
Mosquitto for the service's MQTT output).

The service is the real one as ``citybrain up`` starts it (``python -m alerts``, its settings in
the environment, its SQLite store in a fresh data dir, its MQTT publisher), from ``--code`` (a
checkout, e.g. a ``git worktree`` of an older commit, to compare before/after in one session). A
warm-up warning handled first makes sure the consumer has its partitions before the clock starts.
Drain time = first warning produced -> the store holds every warning's final version (polled every
20 ms through a separate read connection: the count and total size of ``warnings_seen`` first, then
every body compared), i.e. the last incident is visible to the API, which reads the same store.
Also printed: the last incident change by the service's own clock (max ``updated_at``), the
incidents made, and the service's CPU (all its threads) per warning, from /proc.

The baseline (the ceiling) in the same run: a bare aiokafka consumer in its own process with the
service's consumer settings (group, fetch wait, 500 records a poll), counting only, fed the same
warnings by the same producer on a topic of the same broker; drain time and CPU measured alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alerts.api import incident_id  # noqa: E402 - the same in every version of the service
from bench.bench_ingest import cpu_seconds  # noqa: E402
from bench.common import Brokers  # noqa: E402
from citybrain.city import City, load_city  # noqa: E402
from citybrain.kafka import ensure_topics  # noqa: E402
from citybrain.records import Evidence, Warning  # noqa: E402
from citybrain.settings import BUNDLED_CITY, Settings  # noqa: E402
from streams.detectors.base import Finding  # noqa: E402
from streams.fusion import GridFusion  # noqa: E402

T0 = 1_795_339_350.0
POLL_S = 0.02
FETCH_WAIT_MS = 20  # alerts.service.FETCH_WAIT_MS (not imported: --code may be another checkout)


def storm(city: City, n: int, seed: int = 7) -> list[Warning]:
    """``n`` warnings as the fusion makes them from every sensor going abnormal at once (waves)."""
    rng = random.Random(seed)
    sensors = list(city.sensors())
    out: list[Warning] = []
    wave = 0
    while len(out) < n:
        fusion = GridFusion(city)
        t = T0 + wave * 3600.0
        rng.shuffle(sensors)
        for k, d in enumerate(sensors):
            score = round(rng.uniform(0.3, 0.95), 3)
            f = Finding("cusum", d.id, d.kind, t + k * 1e-3, 1.0 + score, score, t - 60.0,
                        f"cumulative drift {score * 10:.1f} spreads")
            out += fusion.add(f, d.area)
        for k, d in enumerate(sensors):
            f = Finding("cusum", d.id, d.kind, t + 600.0 + k * 1e-3, 1.0, 0.0, t - 60.0, "back to normal", False)
            out += fusion.add(f, d.area)
        wave += 1
    return out[:n]


def final_bodies(warnings: list[Warning]) -> dict[str, str]:
    """Each warning id's last version (same id -> same grid -> same partition, so in order)."""
    return {w.id: w.encode().decode() for w in warnings}


async def _produce(settings: Settings, warnings: list[Warning]) -> float:
    from aiokafka import AIOKafkaProducer

    payloads = [(w.grid.encode(), w.encode()) for w in warnings]
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka, linger_ms=2)
    await p.start()
    try:
        t0 = time.time()
        futs = [await p.send(settings.topic("warnings"), v, key=k) for k, v in payloads]
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return t0


def produce(settings: Settings, warnings: list[Warning]) -> float:
    """Produce as fast as the producer goes; returns the wall time just before the first send."""
    return asyncio.run(_produce(settings, warnings))


def warmup_warning(city: City) -> Warning:
    g = city.by_level("grid")[0]
    return Warning(id="bench-warmup", event="intrusion", grid=g.id, district=city.district_of(g.id),
                   location=g.centroid, t=T0 - 7200, started_at=T0 - 7200, score=0.9, severity="Severe",
                   certainty="Likely", urgency="Immediate", detector="bench", explanation="warm-up",
                   evidence=(Evidence("bench-0", "camera", T0 - 7200, 1.0, "warm-up"),))


def _bare(settings: Settings, n: int, ready, out) -> None:
    """Child process: the service's consumer settings, counting only."""
    from aiokafka import AIOKafkaConsumer

    async def go():
        c = AIOKafkaConsumer(settings.topic("warnings"), bootstrap_servers=settings.kafka,
                             group_id=f"{settings.topic_prefix}-bare", enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_WAIT_MS)
        await c.start()
        got, cpu0 = -1, None  # the warm-up record first
        try:
            while got < n:
                batch = await c.getmany(timeout_ms=500, max_records=500)
                for msgs in batch.values():
                    got += len(msgs)
                if got >= 0 and cpu0 is None:
                    cpu0 = time.process_time()
                    ready.set()
                    got = max(got, 0)
        finally:
            end, cpu = time.time(), time.process_time() - cpu0
            await c.stop()
        out.put((end, cpu))

    asyncio.run(go())


def bare_run(b: Brokers, warnings: list[Warning], city: City) -> tuple[float, float]:
    """(drain s, CPU us a warning) of the bare consumer."""
    s = settings_for(b, "bare")
    ensure_topics(s)
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_bare, args=(s, len(warnings), ready, out))
    proc.start()
    produce(s, [warmup_warning(city)])
    if not ready.wait(60):
        raise TimeoutError("the bare consumer never got the warm-up record")
    t0 = produce(s, warnings)
    end, cpu = out.get(timeout=600)
    proc.join(30)
    return end - t0, cpu / len(warnings) * 1e6


def settings_for(b: Brokers, tag: str) -> Settings:
    return Settings().replace(data_dir=Path(tempfile.mkdtemp(prefix=f"cb-bench-alerts-{tag}-")),
                              mqtt_url=f"mqtt://127.0.0.1:{b.mqtt_port}", kafka_bootstrap=f"127.0.0.1:{b.kafka_port}",
                              topic_prefix=f"bench{tag}{int(time.time() * 1000) % 10**8}", city_file=BUNDLED_CITY)


class StoreProbe:
    """Read-only view of the service's SQLite store: is every warning's final version in?"""

    def __init__(self, url: str, expected: dict[str, str]) -> None:
        self.path = url.removeprefix("sqlite:///")
        self.expected = expected
        self.count = len(expected) + 1  # + the warm-up
        self.size = sum(len(b.encode()) for b in expected.values())
        self.conn: sqlite3.Connection | None = None

    def _c(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        return self.conn

    def has(self, wid: str) -> bool:
        try:
            return bool(self._c().execute("SELECT 1 FROM warnings_seen WHERE id = ?", (wid,)).fetchone())
        except sqlite3.OperationalError:  # not created yet
            self.conn = None
            return False

    def done(self) -> bool:
        n, size = self._c().execute("SELECT COUNT(*), TOTAL(LENGTH(CAST(body AS BLOB))) FROM warnings_seen "
                                    "WHERE id != 'bench-warmup'").fetchone()
        if n + 1 != self.count or int(size) != self.size:
            return False
        got = dict(self._c().execute("SELECT id, body FROM warnings_seen WHERE id != 'bench-warmup'").fetchall())
        return got == self.expected

    def incidents(self) -> list[tuple]:
        return self._c().execute("SELECT id, body FROM incidents WHERE id != ? ORDER BY id",
                                 (incident_id("bench-warmup"),)).fetchall()


def service_run(b: Brokers, warnings: list[Warning], city: City, code: Path, hold_s: float) -> dict:
    """Drain time, CPU a warning and the incidents of the service fed ``warnings``."""
    s = settings_for(b, "svc")
    ensure_topics(s)
    env = {**os.environ, **s.to_env(), "CITYBRAIN_LOG_LEVEL": "WARNING", "PYTHONPATH": str(code)}
    proc = subprocess.Popen([sys.executable, "-m", "alerts"], env=env, cwd=code)
    probe = StoreProbe(s.store, final_bodies(warnings))
    try:
        produce(s, [warmup_warning(city)])
        deadline = time.time() + 120
        while not probe.has("bench-warmup"):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("the incident service never handled the warm-up warning")
            time.sleep(0.05)
        time.sleep(0.5)
        cpu0 = cpu_seconds(proc.pid)
        print(f"  service pid {proc.pid} (storm of {len(warnings)} starts)", flush=True)
        t0 = produce(s, warnings)
        while not probe.done():
            if time.time() - t0 > 600 or proc.poll() is not None:
                raise RuntimeError("the incident service did not drain the storm")
            time.sleep(POLL_S)
        end = time.time()
        cpu = cpu_seconds(proc.pid) - cpu0
        rows = probe.incidents()
        last = max(json.loads(body)["updated_at"] for _, body in rows)
        time.sleep(hold_s)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"drain_s": end - t0, "last_change_s": last - t0, "cpu_us": cpu / len(warnings) * 1e6,
            "incidents": rows}


def incident_view(rows: list[tuple]) -> list[dict]:
    """What must not change with the implementation: the incidents and what is in them."""
    out = []
    for inc_id, body in rows:
        d = json.loads(body)
        out.append({"id": inc_id, "event": d["event"], "area": d["area"], "state": d["state"],
                    "severity": d["severity"], "certainty": d["certainty"], "warnings": sorted(d["warnings"]),
                    "evidence": sorted((e["source"], e["t"]) for e in d["evidence"]), "version": d["version"],
                    "history": [(h["action"], h["state"]) for h in d["history"]]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warnings", default="2000,10000", help="storm sizes, comma-separated")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose incident service runs")
    ap.add_argument("--dump", type=Path, help="write the incidents of each storm (JSON) here, for comparisons")
    ap.add_argument("--hold", type=float, default=0.0, help="seconds to keep the service up after a storm")
    ap.add_argument("--no-baseline", action="store_true")
    a = ap.parse_args()
    city = load_city(BUNDLED_CITY)
    dumps = {}
    print(f"code: {a.code}; {os.cpu_count()} cores; city {len(list(city.sensors()))} sensors, "
          f"{len(city.by_level('grid'))} grids")
    for n in (int(x) for x in a.warnings.split(",")):
        warnings = storm(city, n)
        ids = len({w.id for w in warnings})
        events = sorted({w.event for w in warnings})
        print(f"storm: {n} warnings ({ids} situations, {sum(not w.active for w in warnings)} back to normal, "
              f"{len({w.grid for w in warnings})} grids, events {', '.join(events)})", flush=True)
        with Brokers() as b:
            base = None if a.no_baseline else bare_run(b, warnings, city)
            r = service_run(b, warnings, city, a.code, a.hold)
        print(f"  incident service: drain {r['drain_s']:.2f} s ({n / r['drain_s']:,.0f} warnings/s), last incident "
              f"change at +{r['last_change_s']:.2f} s, CPU {r['cpu_us']:,.0f} us a warning, "
              f"{len(r['incidents'])} incidents")
        if base:
            print(f"  bare aiokafka consumer (ceiling): drain {base[0]:.2f} s ({n / base[0]:,.0f} warnings/s), "
                  f"CPU {base[1]:,.1f} us a warning")
            print(f"  ratio service / bare: {base[0] / r['drain_s']:.3f} (rate), "
                  f"{r['cpu_us'] / base[1]:.0f}x CPU a warning")
        dumps[n] = incident_view(r["incidents"])
    if a.dump:
        a.dump.write_text(json.dumps(dumps, indent=1))


if __name__ == "__main__":
    main()
