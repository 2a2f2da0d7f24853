"""Ingest's time-series writes, in a child process of their own.

Why a process and not a thread: the embedded store is SQLite, and Python's ``sqlite3`` lets go
of the GIL around every row's step and takes it back after. A writer thread doing that 15,000
times a second convoys with ingest's parsing: measured on this project's 2-core box, a thread
inserting 20,000 rows/s cut the main thread's JSON parsing from 151k to 98k messages/s (80k with
the default switch interval), and in the whole system ingest took 8.7k of 10k msg/s offered. In
its own process the writer costs ingest one pipe write per acknowledged batch (the Kafka bodies
it already encoded, GIL released while writing) and nothing else.

What is kept as before: the store stays off the critical path (a bounded backlog in ingest,
whatever does not fit is dropped and counted, never holding up Kafka or the acks); the store's
own outage handling (``SqliteSeries``/``InfluxSeries`` buffer, log the cause, flush when back)
runs here unchanged and logs to ingest's log (the child inherits its stderr). A child that dies
is started again; what it held is lost to the store (never to Kafka, which has every reading).
The child exits when ingest does: on the end marker, or on end-of-file if ingest was killed.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from multiprocessing.connection import Connection

import orjson

from citybrain import logs
from citybrain.settings import Settings

log = logging.getLogger("ingest.series")

#: what the parent sends to say "flush and exit"
END = b""
#: a transaction gathers acknowledged batches for up to this long, or until this many bytes of
#: them arrived (~20,000 readings): SQLite's cost a row falls ~3x from 2,000-row transactions to
#: 20,000-row ones (the index pages a transaction dirties are written once, not once per batch);
#: the screen's charts see readings up to this much later
COALESCE_S = 0.5
COALESCE_BYTES = 2 << 20
#: the writer's niceness relative to ingest (lower CPU priority)
NICENESS = 5
#: seconds ingest waits for the child to flush at shutdown before it is killed
CLOSE_TIMEOUT_S = 30.0


def rows_of(msg: bytes) -> list[tuple[str, str, float, float]]:
    """(device, quantity, t, value) of every reading in a message: ``signal_batch`` bodies, one a
    line (compact JSON has no raw newline)."""
    rows: list[tuple[str, str, float, float]] = []
    for body in msg.split(b"\n"):
        d = orjson.loads(body)
        rows.extend(zip(d["device"], d["name"], d["t"], d["value"]))
    return rows


def _take(conn: Connection, clock=time.monotonic) -> tuple[list[bytes], bool]:
    """The next message and what else arrives within COALESCE_S of it (at most COALESCE_BYTES),
    for one transaction; True once the parent said END or is gone (killed: end-of-file), after
    which what was taken is still written."""
    msgs: list[bytes] = []
    try:
        msg = conn.recv_bytes()
        deadline, size = clock() + COALESCE_S, 0
        while msg != END:
            msgs.append(msg)
            size += len(msg)
            if size >= COALESCE_BYTES or not conn.poll(max(0.0, deadline - clock())):
                return msgs, False
            msg = conn.recv_bytes()
    except EOFError:
        pass
    return msgs, True


def _child(conn: Connection, settings: Settings) -> None:  # pragma: no cover - runs in the child
    logs.setup(f"{settings.ingest_name}-series")
    # off the critical path: when the cores are saturated, ingest, the stream worker and the
    # incident service come first; a writer that falls behind drops (counted), never blocks
    os.nice(NICENESS)
    from citybrain.timeseries import open_writer

    writer = open_writer(settings)
    try:
        done = False
        while not done:
            msgs, done = _take(conn)
            try:
                writer.write([row for m in msgs for row in rows_of(m)])
            except Exception:  # noqa: BLE001 - a bad batch must not stop the writer
                log.exception("time-series write failed")
    finally:
        writer.close()


class SeriesWriterProcess:
    """The parent's side: send batches to the child, restart it when it died, close it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx = mp.get_context("spawn")  # not fork: ingest has threads (paho) and a running loop
        self._lock = threading.Lock()
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=False)
        self._proc = self._ctx.Process(target=_child, args=(parent, self.settings), daemon=True,
                                       name=f"{self.settings.ingest_name}-series")
        self._proc.start()
        parent.close()
        self._conn = child

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def send(self, bodies: list[bytes]) -> bool:
        """Hand encoded signal batches to the writer (blocks while its pipe is full: call from a
        thread). False when the child had died; it is started again for the next batch."""
        msg = b"\n".join(bodies)
        with self._lock:
            try:
                self._conn.send_bytes(msg)
                return True
            except (BrokenPipeError, ConnectionResetError, OSError) as e:
                code = self._proc.exitcode if not self._proc.is_alive() else None
                log.error("time-series writer process died (exit %s: %s); starting it again", code, e)
                self._conn.close()
                self._proc.join(1)
                self.restarts += 1
                self._start()
                return False

    def close(self) -> None:
        """Ask the child to flush and exit; kill it if it does not within CLOSE_TIMEOUT_S."""
        with self._lock:
            try:
                self._conn.send_bytes(END)
            except OSError:
                pass
            self._proc.join(CLOSE_TIMEOUT_S)
            if self._proc.is_alive():
                log.error("time-series writer did not stop within %.0f s; killing it", CLOSE_TIMEOUT_S)
                os.kill(self._proc.pid, 9)
                self._proc.join(5)
            self._conn.close()
