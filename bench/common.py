"""Shared pieces of the benchmarks: private brokers on free ports, load publishers."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
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


def _mqtt_string(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class RawPublisher:
    """A load generator that costs the machine almost nothing: MQTT 3.1.1 over a plain socket,
    QoS 1 PUBLISH packets encoded by hand and written in large chunks, PUBACKs drained by a
    thread and counted. So a measured ceiling is the subscriber's, not the publishers' (paho
    publishers saturate these two cores at ~5k msg/s between them)."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        connect = _mqtt_string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _mqtt_string(client_id.encode())
        self.sock.sendall(bytes([0x10]) + _remaining_length(len(connect)) + connect)
        if self.sock.recv(4)[:1] != b"\x20":
            raise RuntimeError("the broker refused the raw publisher")
        self.sent = self.acked = 0
        self._mid = 0
        self._drain = threading.Thread(target=self._read_acks, daemon=True)
        self._drain.start()

    def _read_acks(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            self.acked += len(data) // 4  # every PUBACK is 4 bytes

    def packet(self, topic: str, payload: bytes) -> bytes:
        self._mid = self._mid % 65535 + 1
        body = _mqtt_string(topic.encode()) + struct.pack("!H", self._mid) + payload
        return b"\x32" + _remaining_length(len(body)) + body  # PUBLISH, QoS 1

    def send(self, packets: list[bytes]) -> None:
        for i in range(0, len(packets), 500):
            self.sock.sendall(b"".join(packets[i:i + 500]))
        self.sent += len(packets)

    def close(self, timeout: float = 300) -> None:
        """Wait until the broker acknowledged everything sent, then disconnect."""
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        self.sock.close()


def _raw_publish_worker(port: int, devices: list[tuple[str, str, str]], n: int, offset: int, qos: int,
                        t0: float) -> None:
    if qos != 1:
        raise ValueError("the raw publisher speaks QoS 1 only")
    pub = RawPublisher(port, f"bench-raw-{offset}")
    packets = []
    for k in range(n):  # encoded up front: the timed part is sending
        dev, kind, unit = devices[(k + offset) % len(devices)]
        payload = json.dumps([{"bn": f"{dev}:", "bt": t0 + (k * 7 + offset) * 0.001, "n": kind, "u": unit,
                               "v": float(k % 97)}], separators=(",", ":")).encode()
        packets.append(pub.packet(f"city/sensors/{dev}", payload))
    pub.send(packets)
    pub.close()


def publish_load(port: int, devices: list[tuple[str, str, str]], total: int, procs: int = 2, qos: int = 1,
                 raw: bool = False) -> float:
    """Publish ``total`` SenML messages from ``procs`` processes; returns seconds taken.

    ``raw``: pre-encoded packets over plain sockets instead of paho (see _raw_publish_worker)."""
    t0 = time.time() - 3600
    start = time.perf_counter()
    target = _raw_publish_worker if raw else _publish_worker
    ps = [mp.Process(target=target, args=(port, devices, total // procs, k * 1_000_000, qos, t0))
          for k in range(procs)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return time.perf_counter() - start
