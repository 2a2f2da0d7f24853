"""Two ingest processes share one feed through an MQTT 5 shared subscription: each takes part
of the load, together they take all of it, once."""

from __future__ import annotations

import json
import time

import pytest

from tests.ingest_helpers import TINY, consume, publisher, start_ingest

pytestmark = pytest.mark.slow
N = 3000


def test_two_ingest_processes_share_the_feed(settings, tmp_path):
    base = settings.replace(city_file=TINY)
    a = base.replace(ingest_client_id=base.ingest_client_id + "-a", data_dir=tmp_path / "a")
    b = base.replace(ingest_client_id=base.ingest_client_id + "-b", data_dir=tmp_path / "b")
    pa, pb = start_ingest(a, tmp_path / "a.log"), start_ingest(b, tmp_path / "b.log")
    pub = publisher(base, "scaleout-pub")
    t0 = time.time() - 600
    try:
        infos = [pub.publish("city/sensors/wl-0001", json.dumps(
            [{"bn": "wl-0001:", "bt": t0 + k * 0.1, "n": "water_level", "u": "m", "v": 1.0}]), qos=1) for k in range(N)]
        for i in infos:
            i.wait_for_publish(30)
        batches = consume(base, "signals", lambda out: len({i for x in out for i in x["ids"]}) >= N, timeout=60)
        time.sleep(1.5)  # one more heartbeat each
    finally:
        pub.disconnect()
        for p in (pa, pb):
            p.terminate()
            p.wait(20)
    ids = [i for x in batches for i in x["ids"]]
    assert len(ids) == N and len(set(ids)) == N  # all of it, once
    got_a = json.loads((a.run_dir / "ingest.json").read_text())["accepted"]
    got_b = json.loads((b.run_dir / "ingest.json").read_text())["accepted"]
    assert got_a + got_b == N
    assert got_a > N * 0.1 and got_b > N * 0.1  # both took a real share


def test_one_of_two_ingest_processes_killed_mid_stream_loses_nothing(settings, tmp_path):
    """kill -9 of one sharer: the other keeps taking its share; the killed one's unacknowledged
    messages wait in its persistent session and arrive when it is restarted (as `citybrain up`
    restarts it), so the feed is complete."""
    import signal

    from tests.ingest_helpers import stats

    base = settings.replace(city_file=TINY, batch_max=200)
    a = base.replace(ingest_client_id=base.ingest_client_id + "-ka", data_dir=tmp_path / "a")
    b = base.replace(ingest_client_id=base.ingest_client_id + "-kb", data_dir=tmp_path / "b")
    pa, pb = start_ingest(a, tmp_path / "a.log"), start_ingest(b, tmp_path / "b.log")
    pub = publisher(base, "scaleout-kill-pub")
    t0 = time.time() - 600
    n = 6000
    try:
        infos = []
        for k in range(n):
            infos.append(pub.publish("city/sensors/wl-0001", json.dumps(
                [{"bn": "wl-0001:", "bt": t0 + k * 0.1, "n": "water_level", "u": "m", "v": 1.0}]), qos=1))
            if k == n // 3:
                deadline = time.time() + 30
                while stats(a).get("accepted", 0) < 300 and time.time() < deadline:
                    time.sleep(0.05)
                pa.send_signal(signal.SIGKILL)
                pa.wait()
        for i in infos:
            i.wait_for_publish(60)
        assert pb.poll() is None  # the other sharer never noticed
        pa = start_ingest(a, tmp_path / "a.log")  # same client id: its session's messages come back
        batches = consume(base, "signals", lambda out: len({i for x in out for i in x["ids"]}) >= n, timeout=120)
    finally:
        pub.disconnect()
        for p in (pa, pb):
            p.terminate()
            p.wait(20)
    ids = {i for x in batches for i in x["ids"]}
    assert len(ids) == n, f"{n - len(ids)} messages lost"
