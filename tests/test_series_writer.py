"""Ingest's time-series writer process: what it is sent reaches the store; a writer killed -9 is
started again and says what it could not write; ingest killed -9 leaves no writer behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from citybrain.settings import Settings
from citybrain.timeseries import SqliteSeries
from ingest import series_writer
from ingest.series_writer import END, NICENESS, SeriesWriterProcess, _take, rows_of

T0 = (time.time() // 3600 - 24) * 3600


def body(device: str, ks: range) -> bytes:
    """A signal batch as ingest encodes it for Kafka."""
    return json.dumps({"type": "signal_batch", "produced_at": 0.0, "events": [], "device": [device] * len(ks),
                       "name": ["water_level"] * len(ks), "grid": ["g"] * len(ks), "t": [T0 + k for k in ks],
                       "value": [float(k) for k in ks], "ids": [f"{device}-{k}" for k in ks]},
                      separators=(",", ":")).encode()


def stored(settings: Settings, device: str) -> list[float]:
    s = SqliteSeries(settings.data_dir / "timeseries.db")
    try:
        return list(s.window(device, T0 - 1, T0 + 10_000)[0])
    finally:
        s.close()


def test_a_transaction_gathers_what_arrives_within_its_window_and_stops_at_its_size(monkeypatch):
    import multiprocessing as mp
    import threading

    recv, send = mp.Pipe(duplex=False)
    send.send_bytes(b"a")
    late = threading.Timer(0.15, send.send_bytes, (b"b",))  # inside the window: the same transaction
    late.start()
    monkeypatch.setattr(series_writer, "COALESCE_S", 0.6)
    t = time.monotonic()
    assert _take(recv) == ([b"a", b"b"], False)
    assert time.monotonic() - t >= 0.6 - 0.05  # it waited out the window for more
    monkeypatch.setattr(series_writer, "COALESCE_BYTES", 3)
    for m in (b"xx", b"yy", b"zz"):
        send.send_bytes(m)
    assert _take(recv) == ([b"xx", b"yy"], False)  # 4 bytes >= 3: written now, not at the window's end
    send.send_bytes(END)
    assert _take(recv) == ([b"zz"], True)  # END: what was taken is still written
    send.close()
    assert _take(recv) == ([], True)  # the parent is gone


def test_rows_of_reads_every_reading_of_every_batch():
    msg = b"\n".join([body("a", range(3)), body("b", range(2))])
    assert rows_of(msg) == [("a", "water_level", T0 + k, float(k)) for k in range(3)] + [
        ("b", "water_level", T0 + k, float(k)) for k in range(2)]


def test_what_is_sent_is_written_and_close_flushes_it(tmp_path):
    s = Settings().replace(data_dir=tmp_path / "data")
    w = SeriesWriterProcess(s)
    assert w.send([body("wl-1", range(0, 500)), body("wl-2", range(0, 10))])
    assert w.send([body("wl-1", range(500, 700))])
    # below ingest's CPU priority: on saturated cores the pipeline comes first
    want = min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS)
    deadline = time.monotonic() + 10  # the child sets it once started
    while os.getpriority(os.PRIO_PROCESS, w.pid) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.getpriority(os.PRIO_PROCESS, w.pid) == want
    w.close()
    assert not w._proc.is_alive()
    assert stored(s, "wl-1") == [T0 + k for k in range(700)]
    assert len(stored(s, "wl-2")) == 10


def test_a_killed_writer_is_started_again_and_the_lost_batch_is_reported(tmp_path):
    s = Settings().replace(data_dir=tmp_path / "data")
    w = SeriesWriterProcess(s)
    assert w.send([body("wl-1", range(0, 100))])
    time.sleep(1.5)  # written
    first = w.pid
    os.kill(first, signal.SIGKILL)
    w._proc.join(5)
    assert w.send([body("wl-1", range(100, 200))]) is False  # never reached a writer: the caller counts it
    assert w.restarts == 1 and w.pid != first
    assert w.send([body("wl-1", range(200, 300))])
    w.close()
    got = stored(s, "wl-1")
    assert got == [T0 + k for k in range(100)] + [T0 + k for k in range(200, 300)]


CHILD = """
import sys, time
from citybrain.settings import Settings
from ingest.series_writer import SeriesWriterProcess
w = SeriesWriterProcess(Settings().replace(data_dir=sys.argv[1]))
print(w.pid, flush=True)
time.sleep(60)
"""


def test_the_writer_exits_when_ingest_is_killed(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "data")], stdout=subprocess.PIPE, text=True)
    child = int(p.stdout.readline())
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        # a zombie child of a dead parent is re-parented and reaped; look at its state
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the writer {child} outlived its ingest process")
