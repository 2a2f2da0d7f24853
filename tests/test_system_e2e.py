"""The whole system, as a user runs it: `citybrain up` with embedded brokers, driven only through
the outside contract (MQTT in, MQTT and HTTP out)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from citybrain import mqtt_auth
from tests.conftest import free_port
from tests.ingest_helpers import wait_for

pytestmark = pytest.mark.slow


def _wait(pred, timeout: float):
    try:
        return wait_for(pred, timeout, every=0.25)
    except AssertionError:
        return None

TINY = Path(__file__).parent / "data" / "tiny_city.yaml"
TOKEN = "e2e-admin-token"
# the embedded broker enforces the production ACL plus one test user who plays every device
PROD_ACL = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "acl"
TESTER, TESTER_PASSWORD = "e2e-tester", "e2e-tester-pass"


class System:
    def __init__(self, tmp: Path, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.extra_args, self.env = list(extra_args), env  # more `citybrain up` options; its environment
        self.http = free_port()
        self.mqtt_port = free_port()
        self.kafka_port = free_port()
        self.data = tmp / "data"
        self.log = tmp / "up.log"
        self.proc: subprocess.Popen | None = None
        self.passwd, self.acl = tmp / "passwd", tmp / "acl"
        self.passwd.write_text(f"{TESTER}:{mqtt_auth.hash_password(TESTER_PASSWORD)}\n")
        self.acl.write_text(PROD_ACL.read_text() + f"\nuser {TESTER}\ntopic readwrite city/#\n")

    def start(self) -> None:
        cmd = [sys.executable, "-m", "citybrain.cli", "up", "--city", str(TINY), "--data-dir", str(self.data),
               "--http-port", str(self.http), "--mqtt-port", str(self.mqtt_port), "--kafka-port",
               str(self.kafka_port), "--admin-token", TOKEN, "--no-simulate",
               "--mqtt-password-file", str(self.passwd), "--mqtt-acl-file", str(self.acl), *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                h = self.api("/api/health")
                if all(v == "up" for v in h["components"].values()) and len(h["components"]) >= 6:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("system did not come up:\n" + self.log.read_text()[-3000:])

    def api(self, path: str, method: str = "GET", body: dict | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                                     data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def supervisor(self) -> dict:
        return json.loads((self.data / "run" / "supervisor.json").read_text())

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(60)
        return self.proc.returncode if self.proc else 0


class Listener:
    """An MQTT client on the embedded broker that records what citybrain publishes."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.got = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"listener-{os.getpid()}-{port}",
                             protocol=mqtt.MQTTv311)
        self.c.username_pw_set(TESTER, TESTER_PASSWORD)
        self.c.on_message = self._on
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on(self, c, u, m):
        self.messages.append((m.topic, m.payload))
        self.got.set()

    def publish(self, topic: str, payload, qos: int = 1) -> None:
        self.c.publish(topic, payload if isinstance(payload, (bytes, str)) else json.dumps(payload), qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    s = System(tmp_path_factory.mktemp("system"))
    s.start()
    yield s
    code = s.stop()
    assert code == 0, s.log.read_text()[-3000:]


def flood_readings(now: float):
    """Water level above the alarm limit (4.0 m) and heavy rain in grid G1."""
    wl = [{"bn": "wl-0001:", "bt": now - 40, "n": "water_level", "u": "m", "v": 4.4}] + \
         [{"t": k * 10, "v": 4.4 + 0.1 * k} for k in range(1, 5)]
    rf = [{"bn": "rf-0001:", "bt": now - 40, "n": "rainfall", "u": "mm/h", "v": 70.0}] + \
         [{"t": k * 10, "v": 72.0 + k} for k in range(1, 5)]
    return wl, rf


def test_flood_readings_become_an_incident_on_mqtt_and_the_api(system):
    lis = Listener(system.mqtt_port, "city/alerts/#")
    try:
        time.sleep(0.5)
        wl, rf = flood_readings(time.time())
        lis.publish("city/sensors/wl-0001", wl)
        lis.publish("city/sensors/rf-0001", rf)

        def flood_on_mqtt():
            for topic, payload in list(lis.messages):
                inc = json.loads(payload)
                if inc.get("event") == "flood":
                    return topic, inc
            return None

        got = _wait(flood_on_mqtt, 60)
        assert got, f"no flood incident on MQTT; saw {lis.messages[:5]}"
        topic, inc = got
        assert topic == f"city/alerts/{inc['id']}"
        assert inc["area"] == "G1" and inc["district"] == "D1"
        assert inc["category"] == "Met" and inc["severity"] in {"Severe", "Extreme"}
        assert "wl-0001" in json.dumps(inc["evidence"])
        assert inc["state"] == "new"
        via_api = system.api(f"/api/incidents/{inc['id']}")
        assert via_api["event"] == "flood" and via_api["area"] == "G1"
        assert any(i["id"] == inc["id"] for i in system.api("/api/incidents?state=open"))
    finally:
        lis.close()


def test_the_embedded_broker_enforces_the_production_password_and_acl_files(system):
    """Anonymous clients are refused; a device user may not publish another device's readings."""
    anon = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv311)
    codes: list = []
    anon.on_connect = lambda c, u, f, rc, p=None: codes.append(rc)
    anon.connect("127.0.0.1", system.mqtt_port)
    anon.loop_start()
    assert _wait(lambda: codes, 10) and codes[0].is_failure, codes
    anon.loop_stop()
    # the components logged in with the per-run service passwords the supervisor made for them
    merged = (system.data / "run" / "mqtt_passwd").read_text()
    assert all(f"citybrain-{n}:$7$" in merged for n in ("ingest", "alerts", "dashboard", "simulator"))
    assert oct((system.data / "run" / "mqtt_passwd").stat().st_mode & 0o777) == "0o600"


def test_bad_input_is_counted_and_visible_while_good_input_flows(system):
    lis = Listener(system.mqtt_port, "city/alerts/#")
    try:
        before = system.api("/api/health")
        lis.publish("city/sensors/wl-0001", b"{not json")
        lis.publish("city/sensors/nope-999", [{"bn": "nope-999:", "n": "water_level", "v": 1.0, "bt": time.time()}])
        lis.publish("city/sensors/aq-0007", [{"bn": "aq-0007:", "n": "pm25", "u": "ug/m3", "v": 12.0, "bt": time.time()}])

        def counted():
            h = system.api("/api/health")
            return h if h["rejected"] >= before["rejected"] + 2 and h["accepted"] > before["accepted"] else None

        h = _wait(counted, 20)
        assert h, system.api("/api/health")
        assert h["rejected_by_reason"].get("bad_json", 0) >= 1
        assert h["rejected_by_reason"].get("unknown_device", 0) >= 1
    finally:
        lis.close()


def test_a_killed_component_is_restarted_and_the_pipeline_recovers(system):
    ingest = system.supervisor()["components"]["ingest"]
    os.kill(ingest["pid"], signal.SIGKILL)
    back = _wait(lambda: (c := system.supervisor()["components"]["ingest"])["restarts"] >= ingest["restarts"] + 1
                 and c["state"] == "up" and c["pid"] != ingest["pid"], 30)
    assert back, system.supervisor()
    # other components were not disturbed
    assert system.supervisor()["components"]["streams"]["restarts"] == 0
    lis = Listener(system.mqtt_port, "city/alerts/#")
    try:
        now = time.time()
        pack = [{"bn": "gs-0001:", "bt": now - 30, "n": "gas", "u": "%LEL", "v": 40.0}] + \
               [{"t": k * 10, "v": 42.0 + k} for k in range(1, 4)]
        lis.publish("city/sensors/gs-0001", pack)
        got = _wait(lambda: any(json.loads(p).get("event") == "gas_leak" for _, p in list(lis.messages)), 60)
        assert got, f"no gas_leak incident after ingest restart; saw {lis.messages[:5]}"
    finally:
        lis.close()


def test_worker_and_incident_service_killed_mid_stream_lose_and_duplicate_nothing(system):
    sup = system.supervisor()["components"]
    lis = Listener(system.mqtt_port, "city/alerts/#")
    try:
        now = time.time()
        pack = [{"bn": "aq-0007:", "bt": now - 30, "n": "pm25", "u": "ug/m3", "v": 210.0}] + \
               [{"t": k * 10, "v": 212.0 + k} for k in range(1, 4)]
        lis.publish("city/sensors/aq-0007", pack)
        for name in ("streams", "alerts"):  # both die right after the readings were acknowledged
            os.kill(sup[name]["pid"], signal.SIGKILL)
        back = _wait(lambda: all((c := system.supervisor()["components"][n])["state"] == "up"
                                 and c["pid"] != sup[n]["pid"] for n in ("streams", "alerts")), 60)
        assert back, system.supervisor()

        def pollution():
            return [i for i in system.api("/api/incidents?state=all") if i["event"] == "air_pollution"]

        got = _wait(pollution, 90)
        assert got and len(got) == 1, got
        assert got[0]["area"] == "G2"
    finally:
        lis.close()
