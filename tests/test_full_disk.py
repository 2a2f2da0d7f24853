"""A full disk or a read-only data dir under real components: a clear error naming the cause,
nothing acknowledged lost, no crash loop, and recovery by itself when space returns.

The data dir is a private 4 MiB tmpfs (``mount -t tmpfs``, so these tests need root or
CAP_SYS_ADMIN and skip with the reason otherwise), filled with a filler file or remounted
read-only; freeing the filler or remounting read-write is "space returns".
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alerts.api import IncidentService
from citybrain import health
from citybrain.city import load_city
from citybrain.kafka import ensure_topics
from citybrain.settings import Settings
from citybrain.timeseries import SqliteSeries
from dashboard.data import build_health
from tests.ingest_helpers import TINY, consume, publisher, start_ingest, stats, wait_for
from tests.test_alerts_loop import produce
from tests.test_alerts_store_outage import incident_view, warnings


class TinyDisk:
    """A 4 MiB tmpfs at ``path`` that a test fills, frees, and remounts read-only or read-write."""

    def __init__(self, path: Path, size: str = "4m") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs for a full-disk test (needs root): {out.stderr.strip()}")
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte: big writes, then page-sized ones until the disk says no."""
        with self.filler.open("ab", buffering=0) as f:
            for size in (65536, 4096, 512):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * size)
        with pytest.raises(OSError) as e:
            (self.path / "probe").write_bytes(b"x" * 4096)
        assert e.value.errno == errno.ENOSPC

    def free(self) -> None:
        self.filler.unlink()

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True, capture_output=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


@pytest.fixture
def disk(tmp_path):
    d = TinyDisk(tmp_path / "disk")
    yield d
    d.unmount()


def alerts_process(settings, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alerts"], env={**os.environ, **settings.to_env()},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def alerts_stats(settings) -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((settings.run_dir / "alerts.json").read_text())
    return {}


def log_says(log: Path, *needles: str) -> bool:
    text = log.read_text(errors="replace")
    return all(n in text for n in needles)


def reference_incidents(settings, tmp_path, ws) -> list[tuple]:
    """The same warnings handled by an incident service whose disk never failed."""
    ref = IncidentService(settings.replace(city_file=TINY, data_dir=tmp_path / "ref"), load_city(TINY))
    for w in ws:
        ref.handle_warning(w)
    return incident_view(ref)


def test_heartbeat_on_a_full_disk_is_logged_not_raised_and_resumes(disk, caplog):
    run = disk.path / "run"
    assert health.write_stats(run, "probe", {"n": 1})
    disk.fill()
    with caplog.at_level(logging.ERROR, logger="citybrain.health"):
        assert health.write_stats(run, "probe", {"n": 2}) is False  # the caller (supervisor) runs on
        assert health.write_stats(run, "probe", {"n": 3}) is False
    assert [r.getMessage() for r in caplog.records].count(
        f"cannot write heartbeat {run / 'probe.json'}: No space left on device; "
        "the component runs on, shown down until it can") == 1  # once per cause, not every second
    assert json.loads((run / "probe.json").read_text())["n"] == 1  # the last good one, whole
    disk.free()
    assert health.write_stats(run, "probe", {"n": 4})
    assert json.loads((run / "probe.json").read_text())["n"] == 4


def test_the_health_view_says_a_stale_heartbeat_is_the_full_disk_not_a_dead_process(disk):
    s = Settings().replace(data_dir=disk.path / "data")
    assert health.write_stats(s.run_dir, "alerts", {"state": "up", "t": time.time() - 60})  # its last beat
    disk.fill()  # since then, the component's beats fail (it logs why, but the screen cannot see that log)
    assert not health.write_stats(s.run_dir, "dashboard", {"state": "up"})  # the command center's own beat
    h = build_health(s, time.time())
    assert h["components"]["alerts"] == "down"
    assert "No space left on device" in h["problems"]["alerts"] and "no heartbeat for" in h["problems"]["alerts"]
    disk.free()
    assert health.write_stats(s.run_dir, "dashboard", {"state": "up"})
    assert "heartbeat_error" not in health.read_all(s.run_dir)["alerts"]  # once writable, only "no heartbeat"


@pytest.mark.slow
def test_incident_service_on_a_full_disk_holds_warnings_in_kafka_then_catches_up(settings, disk, tmp_path):
    s = settings.replace(city_file=TINY, data_dir=disk.path / "data")
    ensure_topics(s)
    first, second = warnings(12, 0), warnings(60, 12)
    log = tmp_path / "alerts.log"
    proc = alerts_process(s, log)
    try:
        wait_for(lambda: alerts_stats(s).get("warnings_in") == 0, 60)
        produce(s, "warnings", first)
        wait_for(lambda: alerts_stats(s).get("warnings_in") == len(first), 60)

        disk.fill()
        produce(s, "warnings", second)  # arrive while the disk is full
        wait_for(lambda: log_says(log, "database or disk is full; holding the input in Kafka", "cannot write heartbeat",
                                  "No space left on device"), 30)
        time.sleep(2)
        assert proc.poll() is None  # alive: no crash, so no crash loop under the supervisor

        disk.free()
        back = wait_for(lambda: (st := alerts_stats(s)).get("warnings_in") == len(first) + len(second) and st, 60)
        assert back["state"] == "up" and back["store_outages"] == 1
        assert log_says(log, "incident store back after", "written again")
    finally:
        proc.terminate()
        code = proc.wait(20)
    assert code == 0, log.read_text()[-3000:]
    got = incident_view(IncidentService(s, load_city(TINY)))
    assert got == reference_incidents(settings, tmp_path, first + second)  # none lost, none twice


@pytest.mark.slow
def test_incident_service_on_a_read_only_data_dir_says_so_waits_and_starts_when_writable(settings, disk, tmp_path):
    s = settings.replace(city_file=TINY, data_dir=disk.path / "data")
    ensure_topics(s)
    ws = warnings(10, 0)
    produce(s, "warnings", ws)
    disk.remount("ro")
    log = tmp_path / "alerts.log"
    proc = alerts_process(s, log)
    try:
        wait_for(lambda: log_says(log, "is unavailable", "Read-only file system", "holding the input in Kafka"), 30)
        time.sleep(2)
        assert proc.poll() is None and not (s.run_dir / "alerts.json").exists()
        disk.remount("rw")
        back = wait_for(lambda: (st := alerts_stats(s)).get("warnings_in") == len(ws) and st, 60)
        assert back["state"] == "up"
    finally:
        proc.terminate()
        code = proc.wait(20)
    assert code == 0, log.read_text()[-3000:]
    assert incident_view(IncidentService(s, load_city(TINY))) == reference_incidents(settings, tmp_path, ws)


def test_citybrain_up_on_a_read_only_data_dir_is_a_one_line_error(disk, tmp_path):
    disk.remount("ro")
    out = subprocess.run([sys.executable, "-m", "citybrain.cli", "up", "--data-dir", str(disk.path / "data"),
                          "--no-simulate"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"data dir {disk.path / 'data'} is not writable: Read-only file system" in out.stderr


@pytest.mark.slow
def test_ingest_on_a_full_disk_delivers_everything_and_writes_its_files_again_later(settings, disk, tmp_path):
    s = settings.replace(city_file=TINY, data_dir=disk.path / "data", batch_max=200)
    log = tmp_path / "ingest.log"
    proc = start_ingest(s, log)
    pub = publisher(s, f"full-disk-pub-{os.getpid()}")
    base = time.time() - 3600

    def send(ks: range, bad: int = 0) -> None:
        infos = [pub.publish("city/sensors/wl-0001", json.dumps(
            [{"bn": "wl-0001:", "bt": base + k, "n": "water_level", "u": "m", "v": 1.0 + k % 7 * 0.1}]), qos=1)
            for k in ks]
        infos += [pub.publish("city/sensors/wl-0001", b"{not json", qos=1) for _ in range(bad)]
        for i in infos:
            i.wait_for_publish(60)

    try:
        send(range(0, 100), bad=1)
        wait_for(lambda: stats(s).get("accepted", 0) >= 100, 30)
        disk.fill()
        send(range(100, 600), bad=20)  # acknowledged to the devices while the disk is full
        got = consume(s, "signals", lambda out: len({i for b in out for i in b["ids"]}) >= 600, timeout=60)
        assert len({i for b in got for i in b["ids"]}) == 600  # every reading reached Kafka
        dead = consume(s, "deadletter", lambda out: len(out) >= 21, timeout=30)
        assert len(dead) == 21 and {d["reason"] for d in dead} == {"bad_json"}  # the topic has them all
        wait_for(lambda: log_says(log, "cannot keep", "(No space left on device); they are on the dead-letter topic",
                                  "cannot write heartbeat", "time-series store", "holding readings in memory"), 30)
        assert proc.poll() is None

        disk.free()
        time.sleep(2.5)  # past the time-series store's retry pause
        send(range(600, 650))
        wait_for(lambda: stats(s).get("accepted") == 650 and time.time() - stats(s)["t"] < 5, 30)  # heartbeat back
        # (the writer gathers up to 0.5 s of batches per transaction: the log line comes that much later)
        wait_for(lambda: log_says(log, "writable again"), 30)
        series = SqliteSeries(disk.path / "data" / "timeseries.db")
        t, _ = wait_for(lambda: (w := series.window("wl-0001", base - 1, base + 700)) and len(w[0]) >= 650 and w, 30)
        assert len(t) == 650  # what was held while the disk was full was written once
        series.close()
    finally:
        pub.disconnect()
        proc.terminate()
        code = proc.wait(30)
    assert code == 0, log.read_text()[-3000:]
