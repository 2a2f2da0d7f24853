"""The whole system under a rate ladder: `citybrain up` with every component on this machine.

    python bench/bench_system.py [--rates 1000,5000,10000,15000,20000] [--seconds 30] [--trace]

A private Mosquitto (tuned queues) carries the load; everything else is what `citybrain up`
starts (tansu, ingest, Faust worker, incident service, command center). Per rung: publishers
(2 processes, QoS 1, paced) send normal readings of the demo city's sensors at the offered rate;
every ``--marker-interval`` s a marker (a gas sensor of its own, added to a copy of the demo
city) crosses its alarm limit in a grid with no open incident and no neighbour with a pending
marker, and the time from publishing it to its incident being listed by GET /api/incidents is a
latency sample. The bench then calls the incident a false alarm (as an operator would), so the
grid is free for a later marker and the open list stays short: ~100 samples per 30 s rung.

Printed per rung: offered vs accepted rate, stream lag (max while offered, and at the end),
p50/p95/p99 latency (nearest rank, with the sample count), CPU % and RSS of each component and of
the brokers, messages lost (published - accepted - rejected, after draining), and whether the rung
was held: accepted >= 95 % of offered, stream lag back under 100 batches, nothing lost, every marker seen
and p99 <= 1 s. ``--trace`` also reads the signals and warnings topics (costs a little CPU) and
splits each sample into its stages by the records' Kafka timestamps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Brokers, RawPublisher, free_port, wait_port  # noqa: E402
from citybrain.city import City, load_city  # noqa: E402
from citybrain.settings import BUNDLED_CITY  # noqa: E402

TOKEN = "bench"
POLL_S = 0.05  # API poll period: a sample is late by up to this much (~25 ms on average)
MARKER_PREFIX = "mk-"
HELD_P99_S = 1.0
HELD_END_LAG = 100  # signal batches the stream worker may still be behind 3 s after the publishers stop


def _pace(port: int, rate: float, seconds: float, k: int, sent: mp.Value, raw: bool = True,
          cpu: mp.Value | None = None, value_t: float | None = None) -> None:
    """Publish normal readings at ``rate`` msg/s for ``seconds`` (QoS 1), from publisher ``k``
    of 2 (each has half the sensors, so a sensor's event times always rise).

    At 5-15 readings/s per sensor (this city has 2,000) no realistic feed is normal to the
    detectors, so the load is stationary: each sensor at the simulator's normal level for the
    time of day ``value_t`` (the bench's start), plus a uniform dither of 1e-5 of it
    (values never repeat: 30 equal readings in a row are a stuck sensor). What was tried
    before, and why it was not normal:

    * rounded values with noise: rounded values repeat (flatline), and noise over 0.1 s is a
      physically absurd rate of change (a water level rising metres a minute);
    * the daily curve, unrounded and without noise: its slow rise at 10 readings/s is a drift
      to each sensor's Cusum, which sums per reading; after ~2 minutes of the ladder ~2,000
      sensors warned within one second (measured 2026-12-03; the same in the scalar monitor).

    ``raw``: over a raw-socket publisher (bench.common.RawPublisher), cheap enough that the offered
    rate is what the system is asked to take, not what Python publishers manage; else paho.
    """
    from simulators.model import normal_value

    city = load_city(BUNDLED_CITY)
    at = time.time() if value_t is None else value_t
    # each device's SenML pack as a template (bn, n, u fixed; bt and v filled in): json.dumps of
    # the whole pack cost ~17 us a message, a quarter of a core at 15k msg/s taken from the system
    sensors = [d for d in city.sensors() if d.kind != "gas"][k::2]
    devs = [(f"city/sensors/{d.id}", f'[{{"bn":"{d.id}:","bt":', f',"n":"{d.kind}","u":"{d.unit}","v":',
             normal_value(d.kind, at, 0.0)) for d in sensors]
    devs = [(topic, head, mid, v, 1e-5 * max(abs(v), 1.0)) for topic, head, mid, v in devs]
    if raw:
        pub = RawPublisher(port, f"ladder-raw-{k}-{os.getpid()}")
    else:
        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ladder-{k}-{os.getpid()}", protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(5000)
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", port)
        c.loop_start()
    start = time.monotonic()
    # event times: when each reading was due, so a sensor's readings are evenly spaced (a burst
    # after a stall stamped with the clock put readings 0.1 ms apart: a rate of change 500 times
    # the usual to the sensor's rate detector)
    t0 = time.time()
    rand = random.Random(k).random  # (a golden-ratio sequence took two steps only: MAD 0 to a detector)
    n = 0
    while (el := time.monotonic() - start) < seconds:
        due, chunk = int(rate * el), []
        while n < due:
            topic, head, mid, v, dither = devs[n % len(devs)]
            v += dither * (rand() - 0.5)
            chunk.append((topic, f"{head}{round(t0 + n / rate, 4)!r}{mid}{v!r}}}]".encode()))
            n += 1
        if raw:
            pub.send([pub.packet(topic, payload) for topic, payload in chunk])
        else:
            for topic, payload in chunk:
                c.publish(topic, payload, qos=1)
        time.sleep(0.01)
    if raw:
        pub.close(30)
    else:
        time.sleep(2)
        c.loop_stop()
        c.disconnect()
    with sent.get_lock():
        sent.value += n
    if cpu is not None:  # the load generator shares the two cores with the system: report its part
        with cpu.get_lock():
            cpu.value += time.process_time()


def api(port: int, path: str, body: dict | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _descendants(pid: int) -> list[int]:
    """Live child processes of ``pid``, recursively (ingest's time-series writer, a worker's)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int(_stat(d.name)[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def proc_usage(pid: int) -> tuple[float, float]:
    """(cpu seconds, rss MiB) of a process and its live descendants (a component's whole cost)."""
    cpu = rss = 0.0
    for p in [pid, *_descendants(pid)]:
        try:
            f = _stat(p)
            cpu += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            rss += int(f[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, IndexError):
            pass
    return cpu, rss


def pct(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (p99 of 100 samples is the 99th, not the worst)."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[max(0, math.ceil(q * len(xs)) - 1)]


def series_dropped(data: Path) -> int:
    """Readings the ingest processes did not write to the time-series store so far (it fell
    behind: they are in Kafka, but not in the screen's charts)."""
    total = 0
    for f in (data / "run").glob("ingest*.json"):
        try:
            total += int(json.loads(f.read_text()).get("series_dropped", 0))
        except (OSError, ValueError):
            pass
    return total


def stream_busy(data: Path) -> dict[str, float]:
    """Seconds the stream worker has spent in its core and in checkpoints, and warnings made and
    taken in (the stream worker's and the incident service's heartbeats)."""
    try:
        st = json.loads((data / "run" / "streams.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {k: float(st[k]) for k in ("process_s", "checkpoint_s", "warnings") if k in st}
    try:
        out["alerts_in"] = float(json.loads((data / "run" / "alerts.json").read_text())["warnings_in"])
    except (OSError, ValueError, KeyError):
        pass
    return out


def marker_grids(city: City) -> list[str]:
    """Grids with a gas sensor, no two of them neighbours (greedy, in a fixed order)."""
    picked, blocked = [], set()
    for d in sorted((d for d in city.sensors() if d.kind == "gas"), key=lambda d: d.area):
        if d.area not in blocked:
            picked.append(d.area)
            blocked |= {d.area} | set(city.neighbours.get(d.area, ()))
    return picked


def bench_city(path: Path, per_grid: int) -> dict[str, list[str]]:
    """A copy of the demo city with ``per_grid`` marker gas sensors in each marker grid.

    Markers are sensors of their own (the load never sends them readings), so each alarm is a new
    episode of a new source; returns {grid: [marker device ids]}."""
    city = load_city(BUNDLED_CITY)
    doc = json.loads(Path(BUNDLED_CITY).read_text())
    where = {d.area: d.location for d in city.sensors() if d.kind == "gas"}
    markers: dict[str, list[str]] = {}
    for i, grid in enumerate(marker_grids(city)):
        ids = markers[grid] = [f"{MARKER_PREFIX}{i:03d}-{k:03d}" for k in range(per_grid)]
        doc["devices"] += [{"id": m, "kind": "gas", "unit": "%LEL", "location": list(where[grid]), "area": grid,
                            "limits": {"warning": 10.0, "alarm": 25.0}} for m in ids]
    path.write_text(json.dumps(doc))
    return markers


@dataclass(slots=True)
class Marker:
    device: str
    grid: str
    sent: float  # wall time it was published
    seen: float | None = None  # wall time its incident was first listed by the API
    raised: float | None = None  # the incident's detected_at (the incident service's wall clock)


class Trace:
    """Kafka timestamps of the records that carried markers (``--trace``): the stages in between.

    Reads ``signals`` (the ingest's produce time of the batch holding a marker's readings) and
    ``warnings`` (the stream worker's produce time of a warning for a marker grid) from their end,
    in a thread of its own. Producers stamp records when they send them (CreateTime)."""

    def __init__(self, kafka: str, prefix: str = "citybrain") -> None:
        self.kafka, self.prefix = kafka, prefix
        self.signals: list[tuple[str, float]] = []  # (marker device, ingest produce time)
        self.warnings: list[tuple[str, float]] = []  # (grid, stream worker produce time)
        self.other: dict[str, int] = {}  # warnings not about markers, by event/detector
        self.example: dict[str, dict] = {}  # the first such warning of each event/detector
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Trace:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        sig, warn = f"{self.prefix}.signals", f"{self.prefix}.warnings"
        cons = AIOKafkaConsumer(bootstrap_servers=self.kafka, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=100, max_partition_fetch_bytes=16 << 20)
        await cons.start()
        try:
            tps = [TopicPartition(t, p) for t in (sig, warn) for p in cons.partitions_for_topic(t) or range(4)]
            cons.assign(tps)
            await cons.seek_to_end(*tps)
            self._ready.set()
            while not self._stop.is_set():
                for tp, recs in (await cons.getmany(timeout_ms=200)).items():
                    for r in recs:
                        if tp.topic == warn:
                            self.warnings.append((r.key.decode(), r.timestamp / 1000))
                            w = json.loads(r.value)
                            if not any(e["source"].startswith(MARKER_PREFIX) for e in w["evidence"]):
                                what = f"{w['event']}/{w['detector']}"
                                self.other[what] = self.other.get(what, 0) + 1
                                self.example.setdefault(what, w)
                        elif MARKER_PREFIX.encode() in r.value:
                            devs = {d for d in json.loads(r.value).get("device", ()) if d.startswith(MARKER_PREFIX)}
                            self.signals += [(d, r.timestamp / 1000) for d in devs]
        finally:
            self._ready.set()
            await cons.stop()

    def stages(self, markers: list[Marker]) -> dict[str, list[float]]:
        """Per stage, the seconds each seen marker spent in it."""
        produced = {}
        for d, t in self.signals:
            produced.setdefault(d, t)
        warned: dict[str, list[float]] = {}
        for g, t in self.warnings:
            warned.setdefault(g, []).append(t)
        out: dict[str, list[float]] = {k: [] for k in STAGES}
        for m in markers:
            p = produced.get(m.device)
            w = next((t for t in sorted(warned.get(m.grid, ())) if p is not None and t >= p - 0.001), None)
            if m.seen is None or p is None or w is None or m.raised is None:
                continue
            for k, v in zip(STAGES, (p - m.sent, w - p, m.raised - w, m.seen - m.raised), strict=True):
                out[k].append(v)
        return out


STAGES = ("publish->ingest produced", "ingest->warning produced", "warning->incident raised",
          "raised->API visible")


class Markers:
    """Schedules markers in free grids, spots their incidents in the API and closes them."""

    def __init__(self, devices: dict[str, list[str]], city: City, probe, http: int) -> None:
        self.free = {g: list(reversed(ids)) for g, ids in devices.items()}
        self.order = list(devices)
        self.neighbours = city.neighbours
        self.probe, self.http = probe, http
        self.pending: dict[str, Marker] = {}  # grid -> marker not yet seen
        self.closing: set[str] = set()  # incidents seen, being called false alarms
        self.closed: set[str] = set()
        self.busy: set[str] = set()  # grids with a pending marker or an open incident of ours
        self._next = 0
        self._pool = ThreadPoolExecutor(1)

    def send_one(self) -> bool:
        """Alarm the next free marker; False if no grid is free (the system is behind)."""
        near = set().union(*({g} | set(self.neighbours.get(g, ())) for g in self.pending))
        for k in range(len(self.order)):
            g = self.order[(self._next + k) % len(self.order)]
            if g in self.busy or g in near or not self.free[g]:
                continue
            self._next = (self._next + k + 1) % len(self.order)
            dev = self.free[g].pop()
            now = time.time()
            self.probe.publish(f"city/sensors/{dev}", json.dumps(
                [{"bn": f"{dev}:", "bt": now - 10, "n": "gas", "u": "%LEL", "v": 40.0}, {"t": 5, "v": 41.0},
                 {"t": 10, "v": 42.0}]), qos=1)
            self.pending[g] = Marker(dev, g, now)
            self.busy.add(g)
            return True
        return False

    def poll(self) -> list[Marker]:
        """Markers whose incident the API lists now (each once); their incidents get closed."""
        incidents = api(self.http, "/api/incidents?state=open")
        now = time.time()
        out = []
        for inc in incidents:
            m = self.pending.get(inc["area"])
            if m is None or inc["event"] != "gas_leak" or inc["id"] in self.closing or inc["id"] in self.closed:
                continue
            m.seen, m.raised = now, inc["detected_at"]
            out.append(self.pending.pop(inc["area"]))
            self.closing.add(inc["id"])
            self._pool.submit(self._close, inc["id"], inc["area"])
        return out

    def _close(self, inc_id: str, grid: str) -> None:
        try:
            api(self.http, f"/api/incidents/{inc_id}/actions", {"action": "false_alarm", "note": "bench marker"})
        finally:
            self.closed.add(inc_id)
            self.closing.discard(inc_id)
            self.busy.discard(grid)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,5000,10000,15000,20000")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--marker-interval", type=float, default=0.25, help="seconds between latency markers")
    ap.add_argument("--publishers", choices=["raw", "paho"], default="raw",
                    help="raw: cheap raw-socket QoS 1 publishers (default); paho: paho clients")
    ap.add_argument("--ingest-processes", type=int, default=1, help="ingest processes sharing the feed")
    ap.add_argument("--trace", action="store_true", help="split each latency sample into its stages")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds at the first rung's rate before it")
    a = ap.parse_args()
    raw = a.publishers == "raw"
    rates = [float(r) for r in a.rates.split(",")]
    with Brokers() as b, tempfile.TemporaryDirectory() as data:
        city_file = Path(data) / "bench-city.json"
        n_grids = len(marker_grids(load_city(BUNDLED_CITY)))
        per_grid = math.ceil(len(rates) * (a.seconds / a.marker_interval + 10) / n_grids)
        devices = bench_city(city_file, min(per_grid, 30))  # fusion keeps 32 sources per situation
        city = load_city(city_file)
        http = free_port()
        up = subprocess.Popen([sys.executable, "-m", "citybrain.cli", "up", "--city", str(city_file),
                               "--mqtt", f"mqtt://127.0.0.1:{b.mqtt_port}", "--kafka", f"127.0.0.1:{b.kafka_port}",
                               "--http-port", str(http), "--data-dir", data, "--admin-token", TOKEN, "--no-simulate",
                               "--ingest-processes", str(a.ingest_processes)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "CITYBRAIN_LOG_LEVEL": "WARNING"})
        wait_port(http, 120)
        time.sleep(15)  # the Faust worker joins its group
        import paho.mqtt.client as mqtt

        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ladder-probe", protocol=mqtt.MQTTv5)
        probe.connect("127.0.0.1", b.mqtt_port)
        probe.loop_start()
        trace = Trace(f"127.0.0.1:{b.kafka_port}") if a.trace else None
        if trace:
            trace.__enter__()
        marks = Markers(devices, city, probe, http)
        brokers = {"mosquitto": b.procs[0].pid, "tansu": b.procs[1].pid}
        print(f"{'sent/s':>8} {'taken/s':>8} {'lag max/end':>11} {'lost':>4} {'n':>4} {'p50 s':>6} {'p95 s':>6} "
              f"{'p99 s':>6} {'held':>4}  cpu% / RSS MiB per component", flush=True)
        value_t = time.time()  # the time of day whose normal levels the publishers send
        # every device reports before anything is measured (its detectors are created), at the first
        # rung's rate: what a sensor's value does per second depends on readings per second, and the
        # rates a sensor learned at 0.6 readings/s made ~400 sensors "change faster than usual" at 6/s
        if a.warmup > 0:
            ps = [mp.Process(target=_pace, args=(b.mqtt_port, rates[0] / 2, a.warmup, k, mp.Value("i", 0), raw, None,
                                                 value_t))
                  for k in range(2)]
            for p in ps:
                p.start()
            for p in ps:
                p.join()
            time.sleep(3)
        for rate in rates:
            comps = json.loads((Path(data) / "run" / "supervisor.json").read_text())["components"]
            pids = {n: c["pid"] for n, c in comps.items() if c.get("pid")} | brokers
            cpu0 = {n: proc_usage(p)[0] for n, p in pids.items()}
            h0 = api(http, "/api/health")
            busy0 = stream_busy(Path(data))
            dropped0 = series_dropped(Path(data))
            sent, pub_cpu = mp.Value("i", 0), mp.Value("d", 0.0)
            ps = [mp.Process(target=_pace, args=(b.mqtt_port, rate / 2, a.seconds, k, sent, raw, pub_cpu, value_t))
                  for k in range(2)]
            t_start = time.monotonic()
            for p in ps:
                p.start()
            done: list[Marker] = []
            next_marker = next_health = time.monotonic()
            lag_max, skipped = 0, 0
            while any(p.is_alive() for p in ps):
                now = time.monotonic()
                if now >= next_marker:
                    next_marker += a.marker_interval
                    skipped += not marks.send_one()
                if now >= next_health:
                    next_health += 1.0
                    lag_max = max(lag_max, api(http, "/api/health")["lag"])
                done += marks.poll()
                time.sleep(max(0.0, min(POLL_S, next_marker - time.monotonic())))
            h_mid = api(http, "/api/health")  # publishers done: what was taken in while offered
            pub_wall = time.monotonic() - t_start
            deadline = time.monotonic() + 15
            while marks.pending and time.monotonic() < deadline:
                done += marks.poll()
                time.sleep(POLL_S)
            unseen = list(marks.pending.values())  # their grids stay busy: a late incident must not count
            marks.pending.clear()
            wall = time.monotonic() - t_start
            time.sleep(3)
            h1 = api(http, "/api/health")
            accounted = (h1["accepted"] + h1["rejected"]) - (h0["accepted"] + h0["rejected"])
            lost = max(0, sent.value + len(done) + len(unseen) - accounted)  # markers are messages too
            during = (h_mid["accepted"] + h_mid["rejected"]) - (h0["accepted"] + h0["rejected"])
            usage = []
            for n, p in pids.items():
                c1, rss = proc_usage(p)
                usage.append(f"{n} {100 * (c1 - cpu0[n]) / wall:.0f}/{rss:.0f}")
            usage.append(f"publishers {100 * pub_cpu.value / wall:.0f}")
            lat = [m.seen - m.sent for m in done]
            p99 = pct(lat, .99)
            held = (during >= 0.95 * sent.value and lost == 0 and not unseen and p99 is not None
                    and p99 <= HELD_P99_S and h1["lag"] <= HELD_END_LAG)
            f = lambda x: f"{x:6.2f}" if x is not None else "     -"  # noqa: E731
            print(f"{sent.value / pub_wall:8.0f} {during / pub_wall:8.0f} {lag_max:5d}/{h1['lag']:<5d} {lost:4d} "
                  f"{len(lat):4d} {f(pct(lat, .5))} {f(pct(lat, .95))} {f(p99)} {'yes' if held else 'no':>4}  "
                  f"{', '.join(usage)}" + (f"  ({len(unseen)} markers not seen)" if unseen else "")
                  + (f"  ({skipped} markers skipped: no free grid)" if skipped else "")
                  + (f"  ({dropped} readings not written to the time series)"
                     if (dropped := series_dropped(Path(data)) - dropped0) else ""), flush=True)
            if trace:
                time.sleep(1)
                busy = {k: v - busy0.get(k, 0.0) for k, v in stream_busy(Path(data)).items()}
                print(f"    in {wall + 4:.0f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in busy.items()), flush=True)
                for k, xs in trace.stages(done).items():
                    print(f"    {k:<26} p50 {f(pct(xs, .5))}  p95 {f(pct(xs, .95))}  p99 {f(pct(xs, .99))}  "
                          f"(n {len(xs)})", flush=True)
                if trace.other:
                    print("    other warnings: " + ", ".join(f"{k} {n}" for k, n in sorted(trace.other.items())))
                    for k, w in sorted(trace.example.items()):
                        print(f"      e.g. {k}: {json.dumps(w)[:600]}")
                trace.signals.clear()
                trace.warnings.clear()
                trace.other.clear()
                trace.example.clear()
        if trace:
            trace.__exit__()
        probe.loop_stop()
        up.terminate()
        up.wait(60)


if __name__ == "__main__":
    main()
