"""PostgreSQL going away under the incident service: the service holds its input in Kafka, stays
alive, says so in its health, and when the database returns it catches up with nothing lost and
nothing duplicated (compared with the same warnings handled with no outage at all).

The database is a private PostgreSQL cluster (initdb) so that it can be crashed without
disturbing anything else.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from alerts.api import IncidentService
from citybrain.city import load_city
from citybrain.kafka import ensure_topics
from citybrain.records import Evidence, Warning
from citybrain.supervisor import STOP_TIMEOUT_S
from tests.conftest import free_port, wait_port
from tests.ingest_helpers import TINY, wait_for
from tests.test_alerts_loop import produce

pytestmark = pytest.mark.slow


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        pytest.fail(f"{name} not found (apt-get install postgresql); .ci/run installs it")
    return found[-1]


class PrivatePostgres:
    """A throw-away cluster on a free port; run as the postgres user when the tests run as root."""

    def __init__(self) -> None:
        # not under pytest's tmp dir: the postgres user could not enter root's private tree
        self.root = Path(tempfile.mkdtemp(prefix="citybrain-pg-"))
        self.dir, self.port = self.root / "pg", free_port()
        self.dir.mkdir(mode=0o700)
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.as_user, _pg_bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.dir), "-l", str(self.dir / "log"), "-w",
                        "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
        wait_port(self.port)

    def crash(self) -> None:
        """kill -9 of the postmaster and every backend, as a machine failure would."""
        pid = int((self.dir / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for p in [pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        for _ in range(50):  # until the old cluster's processes are gone
            if subprocess.run(["pgrep", "-f", str(self.dir)], capture_output=True).returncode != 0 and \
                    not any(Path(f"/proc/{c}").exists() for c in children):
                break
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "stop"],
                       check=False, capture_output=True)


@pytest.fixture
def postgres():
    pg = PrivatePostgres()
    pg.start()
    yield pg
    pg.stop()
    shutil.rmtree(pg.root, ignore_errors=True)


def warnings(n: int, start: int) -> list[Warning]:
    """n warnings over the tiny city's grids and three event types; some merge, most open incidents."""
    city = load_city(TINY)
    grids = [a.id for a in city.by_level("grid")]
    events = ("fire", "flood", "gas_leak")
    now = time.time()
    out = []
    for k in range(start, start + n):
        g, ev = grids[k % len(grids)], events[(k // len(grids)) % len(events)]
        area = city.areas[g]
        out.append(Warning(id=f"outage-w{k}", event=ev, grid=g, district=city.district_of(g),
                           location=area.centroid, t=now - 5, started_at=now - 60, score=0.9, severity="Severe",
                           certainty="Likely", urgency="Immediate", detector="threshold", explanation="test",
                           evidence=(Evidence(f"dev-{k}", ev, now - 5, 1.0 + k),)))
    return out


def incident_view(svc: IncidentService) -> list[tuple]:
    return sorted((i.event, i.area, tuple(sorted(i.warnings))) for i in svc.list_incidents("all"))


def start_alerts(s, log: Path) -> subprocess.Popen:
    """The incident service as `citybrain up` runs it, its output in ``log``."""
    return subprocess.Popen([sys.executable, "-m", "alerts"], env={**os.environ, **s.to_env()},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def stop_as_the_supervisor_would(proc: subprocess.Popen, what: str) -> int:
    """SIGTERM, then the supervisor's patience (STOP_TIMEOUT_S): the exit code, or fail with ``what``."""
    proc.terminate()
    try:
        return proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the incident service ignored SIGTERM while {what}")
    finally:
        proc.kill()


def test_postgres_crash_holds_warnings_in_kafka_then_catches_up_with_nothing_lost(settings, postgres, tmp_path):
    s = settings.replace(city_file=TINY, store_url=postgres.url)
    ensure_topics(s)
    first, second = warnings(12, 0), warnings(12, 12)
    proc = start_alerts(s, tmp_path / "alerts.log")
    stats = s.run_dir / "alerts.json"
    try:
        wait_for(lambda: stats.exists() and json.loads(stats.read_text()).get("state") == "up", 60)
        produce(s, "warnings", first)
        wait_for(lambda: json.loads(stats.read_text()).get("warnings_in") == len(first), 60)

        postgres.crash()
        produce(s, "warnings", second)  # arrive while the database is down
        down = wait_for(lambda: (d := json.loads(stats.read_text())).get("state") == "degraded" and d, 30)
        assert "unavailable" in down["store_error"] and proc.poll() is None  # alive, and says why
        time.sleep(2)
        assert proc.poll() is None and json.loads(stats.read_text())["warnings_in"] < len(first) + len(second)

        postgres.start()
        wait_for(lambda: json.loads(stats.read_text()).get("warnings_in") == len(first) + len(second), 60)
        back = json.loads(stats.read_text())
        assert back["state"] == "up" and back["store_outages"] == 1
    finally:
        proc.terminate()
        code = proc.wait(20)
    assert code == 0, (tmp_path / "alerts.log").read_text()[-3000:]

    # the same warnings, handled with no outage, give exactly the same incidents
    reference = IncidentService(settings.replace(city_file=TINY, data_dir=tmp_path / "ref"), load_city(TINY))
    for w in first + second:
        reference.handle_warning(w)
    got = IncidentService(s, load_city(TINY))
    assert incident_view(got) == incident_view(reference)
    assert sum(len(w) for _, _, w in incident_view(got)) == len(first) + len(second)  # every warning, once
    log = (tmp_path / "alerts.log").read_text()
    assert "holding the input in Kafka" in log and "incident store back after" in log


def test_sigterm_while_the_database_is_down_stops_the_service_before_the_supervisor_kills_it(settings, postgres,
                                                                                          tmp_path):
    s = settings.replace(city_file=TINY, store_url=postgres.url)
    ensure_topics(s)
    held = warnings(6, 200)
    stats = s.run_dir / "alerts.json"

    proc = start_alerts(s, tmp_path / "alerts.log")
    try:
        wait_for(lambda: stats.exists() and json.loads(stats.read_text()).get("state") == "up", 60)
        postgres.crash()
        produce(s, "warnings", held)
        wait_for(lambda: json.loads(stats.read_text()).get("state") == "degraded", 30)  # in its retry loop
    finally:
        code = stop_as_the_supervisor_would(proc, "its store was down")
    assert code == 0, (tmp_path / "alerts.log").read_text()[-3000:]

    postgres.start()  # what it held is still in Kafka, uncommitted: the next run handles it
    stats.unlink()
    again = start_alerts(s, tmp_path / "alerts2.log")
    try:
        wait_for(lambda: stats.exists() and json.loads(stats.read_text()).get("warnings_in") == len(held), 60)
    finally:
        again.terminate()
        again.wait(20)
    reference = IncidentService(settings.replace(city_file=TINY, data_dir=tmp_path / "ref"), load_city(TINY))
    for w in held:
        reference.handle_warning(w)
    assert incident_view(IncidentService(s, load_city(TINY))) == incident_view(reference)


def test_sigterm_while_the_database_was_never_up_stops_the_service_promptly(settings, postgres, tmp_path):
    s = settings.replace(city_file=TINY, store_url=postgres.url)
    ensure_topics(s)
    postgres.stop()  # down before the service starts: it waits to open its store
    log = tmp_path / "alerts.log"
    proc = start_alerts(s, log)
    try:
        wait_for(lambda: "holding the input in Kafka" in log.read_text(), 60)
    finally:
        code = stop_as_the_supervisor_would(proc, "waiting for its store to open")
    assert code == 0, log.read_text()[-3000:]


def test_the_api_answers_503_while_the_database_is_down_and_recovers_by_itself(settings, postgres, tmp_path):
    import requests

    from dashboard.server import BackgroundServer, create_app

    s = settings.replace(city_file=TINY, store_url=postgres.url, admin_token="outage-admin")
    city = load_city(TINY)
    svc = IncidentService(s, city)
    svc.handle_warning(warnings(1, 100)[0])
    app = create_app(s, city, svc)
    auth = {"Authorization": "Bearer outage-admin"}
    with BackgroundServer(app) as srv:
        assert len(requests.get(srv.url + "/api/incidents", headers=auth, timeout=10).json()) == 1
        postgres.crash()
        r = requests.get(srv.url + "/api/incidents", headers=auth, timeout=20)
        assert r.status_code == 503 and "unavailable" in r.json()["error"] and "postgres@" in r.json()["error"]
        postgres.start()
        r = wait_for(lambda: (x := requests.get(srv.url + "/api/incidents", headers=auth, timeout=10)).ok and x, 30)
        assert len(r.json()) == 1
