"""The time-series store: embedded SQLite (raw + per-minute aggregates) and the InfluxDB 2 write
path against a real server (Debian's victoria-metrics speaks the v2 write API), including an
outage: buffered while down, flushed when it returns."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from citybrain import timeseries
from citybrain.timeseries import InfluxSeries, SqliteSeries, open_reader, open_writer
from tests.conftest import free_port, wait_port

T0 = (time.time() // 3600 - 24) * 3600  # a whole hour a day ago: inside the store's 7-day retention


def test_sqlite_raw_window_and_minute_aggregates(settings):
    w = open_writer(settings)
    assert isinstance(w, SqliteSeries)
    rows = [("wl-0001", "water_level", T0 + k * 10, 1.0 + k) for k in range(12)]  # two minutes
    w.write(rows)
    w.write([("rf-0001", "rainfall", T0, 5.0)])
    r = open_reader(settings)
    t, v = r.window("wl-0001", T0 + 15, T0 + 65)
    assert list(t) == [T0 + 20, T0 + 30, T0 + 40, T0 + 50, T0 + 60] and list(v) == [3.0, 4.0, 5.0, 6.0, 7.0]
    mins = r.minutes("wl-0001", T0, T0 + 119)
    assert [m["count"] for m in mins] == [6, 6]
    assert mins[0]["mean"] == pytest.approx(3.5) and mins[0]["min"] == 1.0 and mins[0]["max"] == 6.0
    empty_t, empty_v = r.window("nope", T0, T0 + 60)
    assert len(empty_t) == 0 and len(empty_v) == 0



@pytest.mark.parametrize("fold_s", [0.0, 1e9], ids=["folded-every-batch", "never-folded-before-close"])
def test_minute_aggregates_fold_across_batches_like_a_reference(settings, monkeypatch, fold_s):
    """Minutes are folded by SQL every few seconds over the rows since the last fold, and a read
    adds the rows not folded yet: batches that share a minute, readings out of order and
    fractional times give what a plain Python fold of all rows gives, before and after a fold."""
    monkeypatch.setattr(timeseries, "FOLD_S", fold_s)
    rng = np.random.default_rng(7)
    w = open_writer(settings)
    ref: dict[tuple[str, int], list[float]] = {}
    for _ in range(5):
        batch = [(f"d{int(d)}", "x", float(T0 + t), float(v)) for d, t, v in
                 zip(rng.integers(0, 3, 400), rng.uniform(0, 300, 400), rng.normal(0, 5, 400))]
        w.write(batch)
        for d, _n, t, v in batch:
            ref.setdefault((d, int(t // 60)), []).append(v)

    def check(r) -> None:
        for dev in ("d0", "d1", "d2"):
            got = r.minutes(dev, T0, T0 + 300)
            want = sorted((m, vs) for (d, m), vs in ref.items() if d == dev)
            assert [g["t"] for g in got] == [m * 60.0 for m, _ in want]
            for g, (_m, vs) in zip(got, want):
                assert g["count"] == len(vs) and g["min"] == min(vs) and g["max"] == max(vs)
                assert g["mean"] == pytest.approx(sum(vs) / len(vs))

    check(open_reader(settings))  # a reader beside the writer (the screen's)
    w.close()  # folds what is left
    r = open_reader(settings)
    assert r.db.execute("SELECT through FROM folded").fetchone()[0] == 2000
    check(r)


class VictoriaMetrics:
    def __init__(self, tmp, port):
        self.tmp, self.port, self.proc = tmp, port, None

    def start(self):
        exe = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
        self.proc = subprocess.Popen([exe, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.tmp}",
                                      "-retentionPeriod=100y", "-search.latencyOffset=0s"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)

    def export(self, match: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/export?" + urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(url, timeout=10) as r:
            return [json.loads(line) for line in r.read().splitlines() if line.strip()]

    def flush(self):
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/internal/force_flush", timeout=10).read()


@pytest.mark.slow
def test_influx_v2_writes_reach_the_server_and_survive_an_outage(settings, tmp_path):
    port = free_port()
    vm = VictoriaMetrics(tmp_path / "vm", port).start()
    s = settings.replace(tsdb_url=f"http://127.0.0.1:{port}", tsdb_token="t", tsdb_org="o", tsdb_bucket="b")
    w = open_writer(s)
    assert isinstance(w, InfluxSeries)
    try:
        w.write([("wl-0001", "water_level", T0 + k, 1.0 + k) for k in range(5)])
        assert not w.buffer
        vm.flush()
        series = vm.export('reading_value{device="wl-0001"}')
        assert series and sorted(series[0]["values"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert series[0]["metric"]["kind"] == "water_level"
        # the server goes away: writes are kept in the bounded buffer, nothing raises
        vm.stop()
        w.write([("wl-0001", "water_level", T0 + 100 + k, 10.0 + k) for k in range(3)])
        assert len(w.buffer) == 3
        vm.start()
        w._next_try = 0.0  # skip the backoff wait instead of sleeping
        assert w.flush() and not w.buffer
        vm.flush()
        values = sorted(vm.export('reading_value{device="wl-0001"}')[0]["values"])
        assert values == [1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0, 12.0]
    finally:
        w.client.close()
        if vm.proc.poll() is None:
            vm.stop()


def test_buffer_is_bounded_and_counts_what_it_drops(settings):
    s = settings.replace(tsdb_url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    w = InfluxSeries(s, buffer_points=10)
    w.write([("d", "k", T0 + k, float(k)) for k in range(25)])
    assert len(w.buffer) == 10 and w.dropped == 15
    assert np.isclose(float(w.buffer[-1].split("value=")[1].split()[0]), 24.0)
    w.client.close()
