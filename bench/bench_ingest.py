"""Ingest throughput: MQTT messages/s into Kafka, against a bare paho subscriber (the ceiling).

    python bench/bench_ingest.py [--messages 60000] [--bad-share 0.2]

Every run uses the same private Mosquitto, the same publishers (2 processes, QoS 1) and the same
messages. The baseline (the ceiling of the issue's target) is a bare stock paho subscriber that
only counts messages in its callback. Ingest receives with its own paho subclass
(``ingest.burst_client.BurstClient``: buffered reads, hand-decoded publishes, one write per
acknowledged batch), so a second reference is printed too: a bare subscriber on that same
client. Ingest parses, validates, batches columnar records to Kafka (tansu) and acknowledges
after Kafka's ack; its rate is messages / (last acknowledgement - first message received), read
from its stats. Ratios to both references printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Brokers, RawPublisher, publish_load  # noqa: E402
from citybrain.city import load_city  # noqa: E402
from citybrain.settings import BUNDLED_CITY, Settings  # noqa: E402
from ingest.burst_client import BurstClient  # noqa: E402
from simulators.bad_messages import corpus  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_subscriber(port: int, n: int, raw: bool = True, burst: bool = False) -> tuple[float, float]:
    """(messages/s, CPU us per message) of a subscriber that only counts: stock paho, or
    (``burst``) ingest's client. CPU per message is the bench process's (the publishers are
    processes of their own): less sensitive to a busy machine than the rate."""
    import paho.mqtt.client as mqtt

    got, done, first = [0], threading.Event(), [0.0]

    def count():
        if not got[0]:
            first[0] = time.perf_counter()
        got[0] += 1
        if got[0] >= n:
            done.set()

    cls = BurstClient if burst else mqtt.Client
    c = cls(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5)
    if burst:
        c.on_raw_message = lambda mid, qos, topic, payload: count()  # paho acks each message
    else:
        c.on_message = lambda c, u, m: count()
    c.connect("127.0.0.1", port)
    c.subscribe("city/sensors/#", qos=1)
    c.loop_start()
    time.sleep(0.5)
    th = threading.Thread(target=publish_load, args=(port, DEVICES, n), kwargs={"raw": raw})
    cpu0 = cpu_seconds(os.getpid())
    th.start()
    done.wait(600)
    elapsed = time.perf_counter() - first[0]
    cpu = cpu_seconds(os.getpid()) - cpu0
    th.join()
    c.loop_stop()
    c.disconnect()
    return got[0] / elapsed, cpu / got[0] * 1e6


def _bad_publisher(port: int, bad_n: int) -> None:
    """Publishes ``bad_n`` messages of the bad-message corpus, cycling it (QoS 1, raw socket)."""
    bad = corpus(city, time.time())
    pub = RawPublisher(port, "bench-raw-bad")
    for i in range(0, bad_n, 500):
        pub.send([pub.packet(bad[k % len(bad)].topic, bad[k % len(bad)].payload) for k in range(i, min(i + 500, bad_n))])
    pub.close()


def ingest_run(b: Brokers, n: int, processes: int = 1, raw: bool = True,
               bad_n: int = 0) -> tuple[float, float, float, dict]:
    """Rate of ``processes`` ingest processes sharing the feed ($share subscription).

    Returns (acknowledged rate, parsed rate, CPU us per message of the ingest processes, stats). The acknowledged rate is the figure: n
    messages / (last MQTT ack, sent after Kafka's ack, - first message received), both times
    recorded by ingest. The parsed rate is how this benchmark measured before 2026-12-02 (parsed
    count polled from the stats file, which is written once a second), kept for comparison.
    ``bad_n``: a third publisher sends that many bad messages at the same time; the rate is
    still of the ``n`` good ones (all messages acknowledged / the time all took, times n / (n + bad_n))."""
    prefix = f"bench{int(time.time())}"
    dirs, procs = [], []
    for k in range(processes):
        data = Path(tempfile.mkdtemp(prefix="cb-bench-ingest-"))
        s = Settings().replace(data_dir=data, mqtt_url=f"mqtt://127.0.0.1:{b.mqtt_port}",
                               kafka_bootstrap=f"127.0.0.1:{b.kafka_port}", topic_prefix=prefix,
                               ingest_client_id=f"bench-ingest-{k}")
        env = {**os.environ, **s.to_env(), "CITYBRAIN_LOG_LEVEL": "WARNING"}
        procs.append(subprocess.Popen([sys.executable, "-m", "ingest"], env=env))
        dirs.append(data / "run" / "ingest.json")
    while not all(p.exists() for p in dirs):
        time.sleep(0.1)
    time.sleep(1)
    th = threading.Thread(target=publish_load, args=(b.mqtt_port, DEVICES, n), kwargs={"raw": raw})
    bad_proc = mp.Process(target=_bad_publisher, args=(b.mqtt_port, bad_n))
    cpu0 = sum(cpu_seconds(p.pid) for p in procs)
    th.start()
    if bad_n:
        bad_proc.start()
    total = n + bad_n
    first, parsed_rate = None, None
    while True:
        sts = [json.loads(p.read_text()) for p in dirs]
        done = sum(st["accepted"] + st["rejected"] for st in sts)
        if first is None and done > 0:
            first = (time.perf_counter(), done)
        if parsed_rate is None and done >= total:
            parsed_rate = (total - first[1]) / (time.perf_counter() - first[0]) * n / total
        if sum(st["acknowledged"] for st in sts) >= total:
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
            break
        time.sleep(0.05)
    start = min(st["first_received_at"] for st in sts if st["first_received_at"])
    acked_rate = n / (max(st["acknowledged_at"] for st in sts) - start)
    th.join()
    if bad_n:
        bad_proc.join()
    for p in procs:
        p.terminate()
        p.wait(30)
    reasons: dict[str, int] = {}
    for st in sts:
        for r, k in st.get("rejected_by_reason", {}).items():
            reasons[r] = reasons.get(r, 0) + k
    merged = {"accepted": sum(st["accepted"] for st in sts), "rejected": sum(st["rejected"] for st in sts),
              "rejected_by_reason": reasons}
    return acked_rate, parsed_rate, cpu / total * 1e6, merged


city = load_city(BUNDLED_CITY)
DEVICES = [(d.id, d.kind, d.unit) for d in city.sensors()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=60000)
    ap.add_argument("--processes", type=int, default=1, help="ingest processes sharing the feed")
    ap.add_argument("--publishers", choices=["raw", "paho"], default="raw",
                    help="raw: pre-encoded QoS 1 packets over sockets (cheap, default); paho: paho clients")
    ap.add_argument("--bad-share", type=float, default=0.0,
                    help="also run ingest with this share of all messages bad (simulators.bad_messages), "
                         "against the clean run of the same session")
    a = ap.parse_args()
    raw = a.publishers == "raw"
    with Brokers() as b:
        base, base_cpu = bare_subscriber(b.mqtt_port, a.messages, raw)
    with Brokers() as b:
        burst, burst_cpu = bare_subscriber(b.mqtt_port, a.messages, raw, burst=True)
    with Brokers() as b:
        rate, parsed, cpu, st = ingest_run(b, a.messages, a.processes, raw)
    print(f"messages: {a.messages} SenML packs, QoS 1, 2 {a.publishers} publisher processes, {os.cpu_count()} cores")
    print(f"bare stock paho subscriber (ceiling): {base:,.0f} msg/s")
    print(f"bare BurstClient subscriber (ingest's paho subclass, counting only): {burst:,.0f} msg/s")
    print(f"ingest x{a.processes} -> Kafka (validated, batched, acked after Kafka): {rate:,.0f} msg/s"
          f"  (parsed-count method used before 2026-12-02: {parsed:,.0f})")
    print(f"ratio ingest / bare stock paho: {rate / base:.2f}")
    print(f"ratio ingest / bare BurstClient: {rate / burst:.2f}")
    print(f"CPU per message: bare stock paho {base_cpu:.1f} us, bare BurstClient {burst_cpu:.1f} us, "
          f"ingest x{a.processes} {cpu:.1f} us (all its threads)")
    print(f"accepted {st['accepted']}, rejected {st['rejected']} {st['rejected_by_reason']}")
    if a.bad_share > 0:
        bad_n = round(a.messages * a.bad_share / (1 - a.bad_share))
        with Brokers() as b:
            bad_rate, _, bad_cpu, bst = ingest_run(b, a.messages, a.processes, raw, bad_n=bad_n)
        bad = corpus(city, time.time())
        want: dict[str, int] = {}
        for k in range(bad_n):
            want[bad[k % len(bad)].reason] = want.get(bad[k % len(bad)].reason, 0) + 1
        print(f"with {bad_n} bad messages mixed in ({a.bad_share:.0%} of all, the {len(bad)}-message corpus "
              f"cycled): good messages {bad_rate:,.0f} msg/s, ratio to the clean run {bad_rate / rate:.2f}; "
              f"CPU per message {bad_cpu:.1f} us")
        print(f"accepted {bst['accepted']} (of {a.messages} good), rejected {bst['rejected']} (of {bad_n} bad), "
              f"every one with its own reason: {'yes' if bst['rejected_by_reason'] == want else 'NO'}"
              + ("" if bst["rejected_by_reason"] == want else f" got {bst['rejected_by_reason']} want {want}"))


if __name__ == "__main__":
    main()
