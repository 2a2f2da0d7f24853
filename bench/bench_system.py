"""The whole system under a rate ladder: `citybrain up` with every component on this machine.

    python bench/bench_system.py [--rates 500,1000,2000,4000,8000] [--seconds 20]

A private Mosquitto (tuned queues) carries the load; everything else is what `citybrain up`
starts (tansu, ingest, Faust worker, incident service, command center). Per rung: publishers
(2 processes, QoS 1, paced) send normal readings of the demo city's sensors at the offered rate;
every 2 s one gas sensor in a fresh grid crosses its alarm limit, and the time from publishing it
to the incident being visible in GET /api/incidents is a latency sample. Printed per rung:
offered vs accepted rate, lag at the end, p50/p95/p99 latency, CPU % and RSS of each component,
messages lost (published - accepted - rejected). The highest rung held (accepted >= 95 % of
offered, lag not growing, nothing lost) is the figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Brokers, RawPublisher, free_port, wait_port  # noqa: E402
from citybrain.city import load_city  # noqa: E402
from citybrain.settings import BUNDLED_CITY  # noqa: E402

TOKEN = "bench"


def _pace(port: int, rate: float, seconds: float, k: int, sent: mp.Value, raw: bool = True) -> None:
    """Publish normal readings at ``rate`` msg/s for ``seconds`` (QoS 1).

    ``raw``: over a raw-socket publisher (bench.common.RawPublisher), cheap enough that the offered
    rate is what the system is asked to take, not what Python publishers manage; else paho.
    """
    from simulators.model import normal_value

    city = load_city(BUNDLED_CITY)
    devs = [(d.id, d.kind, d.unit) for d in city.sensors() if d.kind != "gas"]
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
    n = 0
    while (el := time.monotonic() - start) < seconds:
        due, chunk = int(rate * el), []
        while n < due:
            dev, kind, unit = devs[(n * 7 + k) % len(devs)]
            t = time.time()
            payload = json.dumps([{"bn": f"{dev}:", "bt": round(t + (n % 1000) * 1e-4, 4), "n": kind, "u": unit,
                                   "v": round(normal_value(kind, t, 0.0), 3)}], separators=(",", ":")).encode()
            chunk.append((f"city/sensors/{dev}", payload))
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


def api(port: int, path: str):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def proc_usage(pid: int) -> tuple[float, float]:
    """(cpu seconds, rss MiB) of a process."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        rss = int(f[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        return cpu, rss
    except (OSError, IndexError):
        return 0.0, 0.0


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,1000,2000,4000,8000")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--publishers", choices=["raw", "paho"], default="raw",
                    help="raw: cheap raw-socket QoS 1 publishers (default); paho: paho clients")
    ap.add_argument("--ingest-processes", type=int, default=1, help="ingest processes sharing the feed")
    a = ap.parse_args()
    raw = a.publishers == "raw"
    city = load_city(BUNDLED_CITY)
    gas = sorted((d for d in city.sensors() if d.kind == "gas"), key=lambda d: d.area)
    picked, blocked = [], set()
    for d in gas:  # grids apart from each other: each alarm must be a new incident, not a merge
        if d.area not in blocked:
            picked.append(d)
            blocked |= {d.area} | set(city.neighbours.get(d.area, ()))
    gas = picked
    with Brokers() as b, tempfile.TemporaryDirectory() as data:
        http = free_port()
        up = subprocess.Popen([sys.executable, "-m", "citybrain.cli", "up", "--mqtt", f"mqtt://127.0.0.1:{b.mqtt_port}",
                               "--kafka", f"127.0.0.1:{b.kafka_port}", "--http-port", str(http), "--data-dir", data,
                               "--admin-token", TOKEN, "--no-simulate", "--ingest-processes", str(a.ingest_processes)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "CITYBRAIN_LOG_LEVEL": "WARNING"})
        wait_port(http, 120)
        time.sleep(15)  # the Faust worker joins its group
        import paho.mqtt.client as mqtt

        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ladder-probe", protocol=mqtt.MQTTv5)
        probe.connect("127.0.0.1", b.mqtt_port)
        probe.loop_start()
        print(f"{'sent/s':>9} {'taken/s':>10} {'lag':>6} {'lost':>5} {'p50 s':>6} {'p95 s':>6} {'p99 s':>6}  cpu% / RSS MiB per component")
        g = 0
        for rate in [float(r) for r in a.rates.split(",")]:
            comps = json.loads((Path(data) / "run" / "supervisor.json").read_text())["components"]
            pids = {n: c["pid"] for n, c in comps.items() if c.get("pid")}
            cpu0 = {n: proc_usage(p)[0] for n, p in pids.items()}
            h0 = api(http, "/api/health")
            sent = mp.Value("i", 0)
            ps = [mp.Process(target=_pace, args=(b.mqtt_port, rate / 2, a.seconds, k, sent, raw)) for k in range(2)]
            t_start = time.monotonic()
            for p in ps:
                p.start()
            lat, pending, last_alarm = [], {}, 0.0
            while any(p.is_alive() for p in ps):
                if g < len(gas) and time.monotonic() - last_alarm >= 2.0:
                    last_alarm = time.monotonic()
                    d = gas[g]
                    g += 1
                    now = time.time()
                    probe.publish(f"city/sensors/{d.id}", json.dumps(
                        [{"bn": f"{d.id}:", "bt": now - 10, "n": "gas", "u": "%LEL", "v": 40.0}, {"t": 5, "v": 41.0},
                         {"t": 10, "v": 42.0}]), qos=1)
                    pending[d.area] = time.monotonic()
                seen = {i["area"] for i in api(http, "/api/incidents?state=open")}
                for area in [x for x in pending if x in seen]:
                    lat.append(time.monotonic() - pending.pop(area))
                time.sleep(0.1)
            h_mid = api(http, "/api/health")  # publishers done: what was taken in while offered
            pub_wall = time.monotonic() - t_start
            deadline = time.monotonic() + 15
            while pending and time.monotonic() < deadline:
                seen = {i["area"] for i in api(http, "/api/incidents?state=open")}
                for area in [x for x in pending if x in seen]:
                    lat.append(time.monotonic() - pending.pop(area))
                time.sleep(0.1)
            wall = time.monotonic() - t_start
            time.sleep(3)
            h1 = api(http, "/api/health")
            done = (h1["accepted"] + h1["rejected"]) - (h0["accepted"] + h0["rejected"])
            lost = max(0, sent.value - done)
            during = (h_mid["accepted"] + h_mid["rejected"]) - (h0["accepted"] + h0["rejected"])
            usage = []
            for n, p in pids.items():
                c1, rss = proc_usage(p)
                usage.append(f"{n} {100 * (c1 - cpu0[n]) / wall:.0f}/{rss:.0f}")
            f = lambda x: f"{x:6.2f}" if x is not None else "     -"  # noqa: E731
            print(f"{sent.value / pub_wall:9.0f} {during / pub_wall:10.0f} {h_mid['lag']:6d} {lost:5d} {f(pct(lat, .5))} {f(pct(lat, .95))} "
                  f"{f(pct(lat, .99))}  {', '.join(usage)}" + (f"  ({len(pending)} alarms not seen)" if pending else ""),
                  flush=True)
        probe.loop_stop()
        up.terminate()
        up.wait(60)


if __name__ == "__main__":
    main()
