"""Shared pieces of the benchmarks: private brokers on free ports, load publishers."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from citybrain.brokers import tansu_command

MOSQUITTO_CONF = "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 2000000\nmax_inflight_messages 0\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(port)


class Brokers:
    """A private Mosquitto (MQTT 5, tuned for bursts) and a tansu Kafka broker."""

    def __enter__(self) -> Brokers:
        self.dir = Path(tempfile.mkdtemp(prefix="cb-bench-"))
        self.mqtt_port, self.kafka_port = free_port(), free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.mqtt_port))
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.procs = [subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL),
                      subprocess.Popen(tansu_command(self.kafka_port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        wait_port(self.mqtt_port)
        wait_port(self.kafka_port)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _publish_worker(port: int, devices: list[tuple[str, str, str]], n: int, offset: int, qos: int, t0: float) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{offset}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(2000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    last = None
    for k in range(n):
        dev, kind, unit = devices[(k + offset) % len(devices)]
        payload = json.dumps([{"bn": f"{dev}:", "bt": t0 + (k * 7 + offset) * 0.001, "n": kind, "u": unit,
                               "v": float(k % 97)}], separators=(",", ":"))
        last = c.publish(f"city/sensors/{dev}", payload, qos=qos)
    last.wait_for_publish(300)
    c.loop_stop()
    c.disconnect()


def publish_load(port: int, devices: list[tuple[str, str, str]], total: int, procs: int = 2, qos: int = 1) -> float:
    """Publish ``total`` SenML messages from ``procs`` processes; returns seconds taken."""
    t0 = time.time() - 3600
    start = time.perf_counter()
    ps = [mp.Process(target=_publish_worker, args=(port, devices, total // procs, k * 1_000_000, qos, t0))
          for k in range(procs)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return time.perf_counter() - start
