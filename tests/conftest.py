"""Shared fixtures: real servers on real sockets, one per test session where possible.

- ``kafka``: a tansu broker (memory storage) on a free port.
- ``mosquitto``: a private Mosquitto on a free port (MQTT 5), so tests never share a broker
  with whatever else runs on the machine.
- ``amqtt``: the embedded amqtt broker (MQTT 3.1.1) as `citybrain up` runs it.
- ``settings``: Settings for one test: its own data dir and its own Kafka topic prefix, so that
  tests sharing a broker never see each other's records.
- ``pg_url``: a fresh PostgreSQL database on the local server (skipped when none runs).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from citybrain.brokers import tansu_command
from citybrain.settings import Settings
from citybrain.shared import shared_dir

ROOT = Path(__file__).resolve().parents[1]


SHARED = shared_dir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class Server:
    def __init__(self, cmd: list[str], port: int, log: Path) -> None:
        self.cmd, self.port, self.log = cmd, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def kafka(tmp_path_factory) -> str:
    port = free_port()
    srv = Server(tansu_command(port), port, tmp_path_factory.mktemp("tansu") / "tansu.log").start()
    yield f"127.0.0.1:{port}"
    srv.stop()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory) -> tuple[str, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        pytest.fail("mosquitto is not installed (apt-get install mosquitto); .ci/run installs it")
    d = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 0\nlog_dest stderr\n"
    )
    srv = Server([exe, "-c", str(conf)], port, d / "mosquitto.log").start()
    yield ("127.0.0.1", port)
    srv.stop()


@pytest.fixture(scope="session")
def amqtt(tmp_path_factory) -> tuple[str, int]:
    port = free_port()
    d = tmp_path_factory.mktemp("amqtt")
    srv = Server([sys.executable, "-m", "citybrain.brokers", "mqtt", "--port", str(port)], port, d / "amqtt.log").start()
    yield ("127.0.0.1", port)
    srv.stop()


@pytest.fixture
def settings(tmp_path, kafka, mosquitto) -> Settings:
    """Settings for one test against the session's tansu and Mosquitto."""
    return Settings().replace(
        data_dir=tmp_path / "data",
        kafka_bootstrap=kafka,
        mqtt_url=f"mqtt://{mosquitto[0]}:{mosquitto[1]}",
        topic_prefix=f"t{uuid.uuid4().hex[:10]}",
        ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        ingest_share_group=f"g{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def pg_url() -> str:
    """A fresh database on the local PostgreSQL (trust auth), dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    base = os.environ.get("CITYBRAIN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"cb_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL at {base}: {e}")
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def demo_city():
    from citybrain.city import load_city
    from citybrain.settings import BUNDLED_CITY

    return load_city(BUNDLED_CITY)


def pytest_setup_options():
    """Browser options for dash[testing]'s ``dash_duo``: headless chromium, as root, offline, no GPU."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1920,1080", "--hide-scrollbars"):
        options.add_argument(arg)
    return options
