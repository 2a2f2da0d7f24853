"""MQTT authentication and ACLs: the production files enforced by Mosquitto and by the embedded broker.

Both brokers get the same ``deploy/mosquitto/acl`` and one password file holding hashes written by
``mosquitto_passwd`` and by :func:`citybrain.mqtt_auth.hash_password`; every check runs against
both, so "the embedded broker configured the same way" is shown, not claimed.
"""

from __future__ import annotations

import getpass
import os
import queue
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from citybrain import mqtt_auth
from tests.conftest import Server, free_port
from tests.ingest_helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
ACL = ROOT / "deploy" / "mosquitto" / "acl"
USERS = {"S-0001": "sensor-pass", "S-0002": "other-pass", "U-01": "unit-pass", "U-02": "unit2-pass",
         "citybrain-ingest": "ingest-pass", "citybrain-alerts": "alerts-pass"}


@pytest.fixture(scope="module")
def passwd(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("auth") / "passwd"
    p.write_text("")
    names = sorted(USERS)
    for name in names[::2]:  # half hashed by mosquitto's own tool ...
        subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", str(p), name,
                        USERS[name]], check=True)
    with p.open("a") as f:  # ... half by ours: both brokers must accept both
        for name in names[1::2]:
            f.write(f"{name}:{mqtt_auth.hash_password(USERS[name])}\n")
    return p


@pytest.fixture(scope="module", params=["mosquitto", "amqtt"])
def broker(request, passwd, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    port = free_port()
    if request.param == "mosquitto":
        conf = d / "mosquitto.conf"
        # started as root, mosquitto drops to its own user, which cannot read pytest's private tmp dir
        conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
                        f"acl_file {ACL}\npersistence false\nlog_dest stderr\n")
        cmd = [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)]
    else:
        cmd = [sys.executable, "-m", "citybrain.brokers", "mqtt", "--port", str(port),
               "--password-file", str(passwd), "--acl-file", str(ACL)]
    srv = Server(cmd, port, d / "broker.log").start()
    yield request.param, port
    srv.stop()


def connect(port: int, user: str | None, password: str | None, client_id: str | None = None):
    """A connected MQTT 3.1.1 client (both brokers speak it) and the CONNACK reason."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv311)
    if user:
        c.username_pw_set(user, password)
    got: queue.Queue = queue.Queue()
    c.on_connect = lambda cl, ud, fl, rc, pr: got.put(rc)
    c.messages = queue.Queue()
    c.on_message = lambda cl, ud, m: c.messages.put((m.topic, m.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    rc = got.get(timeout=10)
    if rc.is_failure:
        c.loop_stop()
        c.disconnect()
    return c, rc


def subscribe(c, topic: str) -> int:
    """Subscribe and return the granted QoS (128 = refused)."""
    got: queue.Queue = queue.Queue()
    c.on_subscribe = lambda cl, ud, mid, codes, pr: got.put(codes[0])
    c.subscribe(topic, qos=1)
    return got.get(timeout=10).value


def received(c, timeout: float) -> list[tuple[str, bytes]]:
    out, until = [], time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            out.append(c.messages.get(timeout=0.1))
        except queue.Empty:
            pass
    return out


def test_wrong_or_missing_credentials_are_refused(broker):
    _, port = broker
    for user, password in ((None, None), ("S-0001", "wrong"), ("nobody", "sensor-pass")):
        c, rc = connect(port, user, password)
        assert rc.is_failure, (user, password)
    c, rc = connect(port, "S-0001", "sensor-pass")
    assert not rc.is_failure
    c.disconnect()


def test_a_device_publishes_only_to_its_own_topics(broker):
    _, port = broker
    ingest, rc = connect(port, "citybrain-ingest", "ingest-pass")
    assert not rc.is_failure
    assert subscribe(ingest, "city/#") == 1  # ingest reads everything under city/ (unknown topics are dead-lettered)
    sensor, _ = connect(port, "S-0001", "sensor-pass")
    for topic in ("city/sensors/S-0002", "city/units/U-01/status", "city/alerts/forged", "city/sensors/S-0001"):
        sensor.publish(topic, topic.encode(), qos=1).wait_for_publish(5)
    got = received(ingest, 1.5)
    assert [t for t, _ in got] == ["city/sensors/S-0001"], got  # the three forgeries were dropped
    for c in (ingest, sensor):
        c.disconnect()


def test_a_unit_reads_only_its_own_dispatches(broker):
    _, port = broker
    unit, rc = connect(port, "U-01", "unit-pass")
    assert not rc.is_failure
    assert subscribe(unit, "city/units/U-01/dispatch") == 1
    # a wider subscription reaching other units' dispatches is refused or delivers nothing of theirs
    wide = subscribe(unit, "city/units/+/dispatch")
    alerts, _ = connect(port, "citybrain-alerts", "alerts-pass")
    alerts.publish("city/units/U-02/dispatch", b"<alert>for U-02</alert>", qos=1).wait_for_publish(5)
    alerts.publish("city/units/U-01/dispatch", b"<alert>for U-01</alert>", qos=1).wait_for_publish(5)
    got = received(unit, 1.5)
    assert [t for t, _ in got] == ["city/units/U-01/dispatch"], (wide, got)
    # and a unit cannot forge a dispatch to another unit
    other, _ = connect(port, "U-02", "unit2-pass")
    assert subscribe(other, "city/units/U-02/dispatch") == 1
    unit.publish("city/units/U-02/dispatch", b"forged", qos=1).wait_for_publish(5)
    assert received(other, 1.0) == []
    for c in (unit, alerts, other):
        c.disconnect()


def test_acl_file_semantics():
    acl = mqtt_auth.load_acl(ACL)
    assert acl.may_publish("S-1", "c", "city/sensors/S-1") and not acl.may_publish("S-1", "c", "city/sensors/S-2")
    assert acl.may_publish("CAM-1", "c", "city/cameras/CAM-1/events")
    assert not acl.may_publish("a/#", "c", "city/sensors/a/#")  # no wildcards smuggled in by a user name
    assert acl.may_subscribe("citybrain-ingest", "c", "$share/g/city/#")
    assert not acl.may_subscribe("U-1", "c", "city/units/+/dispatch")
    assert not acl.may_publish(None, "c", "city/sensors/S-1")  # anonymous: nothing


def test_malformed_files_are_named_with_their_line(tmp_path):
    bad = tmp_path / "acl"
    bad.write_text("user x\ntopic read city/#\ntopik write city/#\n")
    with pytest.raises(mqtt_auth.ConfigError, match=r"acl:3"):
        mqtt_auth.load_acl(bad)
    pw = tmp_path / "passwd"
    pw.write_text("alice:plaintext\n")
    with pytest.raises(mqtt_auth.ConfigError, match=r"passwd:1"):
        mqtt_auth.load_passwords(pw)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A throw-away CA, a server certificate for 127.0.0.1 signed by it, and an unrelated one."""
    d = tmp_path_factory.mktemp("tls")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=citybrain-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.crt")
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=someone-else",
        "-keyout", "other.key", "-out", "other.crt")
    for f in d.iterdir():
        f.chmod(0o644)
    return d


@pytest.fixture(scope="module", params=["mosquitto", "amqtt"])
def tls_broker(request, certs):
    """Mosquitto, and the embedded broker as `citybrain up --mqtt-tls-cert/--mqtt-tls-key` runs it."""
    d, port = certs, free_port()
    if request.param == "mosquitto":
        conf = d / f"mosquitto-{port}.conf"
        conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
                        f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
                        "persistence false\nlog_dest stderr\n")
        cmd = [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)]
    else:
        cmd = [sys.executable, "-m", "citybrain.brokers", "mqtt", "--port", str(port),
               "--tls-cert", str(d / "server.crt"), "--tls-key", str(d / "server.key")]
    srv = Server(cmd, port, d / f"{request.param}.log").start()
    yield request.param, port, d
    srv.stop()


def test_tls_is_configurable_and_verifies_the_broker(tls_broker, tmp_path):
    from citybrain import mqtt
    from citybrain.settings import Settings

    kind, port, d = tls_broker
    good = Settings().replace(data_dir=tmp_path, mqtt_url=f"mqtts://127.0.0.1:{port}", mqtt_tls_ca=str(d / "ca.crt"),
                              mqtt_protocol="5" if kind == "mosquitto" else "3.1.1")
    assert good.mqtt_tls and good.mqtt == ("127.0.0.1", port)
    c = mqtt.make_client(good, "tls-ok")
    got: queue.Queue = queue.Queue()
    c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe("city/#", qos=1)
    c.on_subscribe = lambda cl, ud, mid, codes, pr: cl.publish("city/sensors/S-0001", b"[]", qos=1)
    c.on_message = lambda cl, ud, m: got.put(m.topic)
    mqtt.connect(c, good)
    c.loop_start()
    assert got.get(timeout=10) == "city/sensors/S-0001"  # a round trip over TLS
    c.loop_stop()
    c.disconnect()
    # a broker whose certificate the configured CA did not sign is refused
    bad = good.replace(mqtt_tls_ca=str(d / "other.crt"))
    with pytest.raises(ssl_errors()):
        mqtt.connect(mqtt.make_client(bad, "tls-bad"), bad)


def ssl_errors() -> tuple[type[BaseException], ...]:
    import ssl

    return (ssl.SSLError, ssl.CertificateError)


def test_commands_say_why_when_the_broker_refuses_them(broker, tmp_path):
    """`citybrain simulate` with wrong credentials stops with the broker's reason, not a silent run."""
    _, port = broker
    env = {**os.environ, "CITYBRAIN_MQTT_USERNAME": "S-0001", "CITYBRAIN_MQTT_PASSWORD": "wrong"}
    r = subprocess.run([sys.executable, "-m", "citybrain.cli", "simulate", "--city", str(TINY), "--mqtt",
                        f"mqtt://127.0.0.1:{port}", "--mqtt-protocol", "3.1.1", "--duration", "5"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "refused" in r.stderr and "CITYBRAIN_MQTT_PASSWORD" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
