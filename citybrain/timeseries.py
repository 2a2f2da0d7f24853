"""The time-series store of readings: raw points and per-minute aggregates.

Embedded default: SQLite (WAL) at ``settings.tsdb``, enough for one machine and the screen's
evidence charts. Production: InfluxDB 2 through ``influxdb-client`` when ``tsdb_url`` is an
http(s) URL; writes are batched, retried with backoff, and kept in a bounded local buffer while
the server is down, flushed when it returns.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from citybrain.exceptions import DISK_ERRNOS, is_sqlite_outage
from citybrain.settings import Settings

log = logging.getLogger(__name__)

Row = tuple[str, str, float, float]  # device, quantity, t, value


#: a reading's minute, floored as Python's ``t // 60`` (SQLite's CAST truncates toward zero)
_MINUTE = "(CAST(t / 60 AS INTEGER) - (t < 0 AND t / 60 <> CAST(t / 60 AS INTEGER)))"
#: seconds between folds of new raw rows into the minute aggregates
FOLD_S = 5.0
#: minute aggregates of the raw rows in a rowid range (after the first, up to the second)
_FOLD_MINUTES = f"""
    INSERT INTO minute
    SELECT device, name, m, COUNT(*), SUM(v), MIN(v), MAX(v) FROM (
        SELECT device, name, v, {_MINUTE} AS m FROM raw WHERE rowid > ? AND rowid <= ?)
    WHERE true GROUP BY device, m
    ON CONFLICT (device, m) DO UPDATE SET
        n = n + excluded.n, sum = sum + excluded.sum, min = MIN(min, excluded.min), max = MAX(max, excluded.max)
"""


#: a device's minutes: the folded aggregates plus the raw rows not folded yet (one statement: one snapshot)
_MINUTES_READ = f"""
    SELECT m, SUM(n), SUM(s), MIN(lo), MAX(hi) FROM (
        SELECT m, n, sum AS s, min AS lo, max AS hi FROM minute WHERE device = ? AND m BETWEEN ? AND ?
        UNION ALL
        SELECT {_MINUTE}, 1, v, v, v FROM raw
        WHERE device = ? AND t >= ? AND t < ? AND rowid > (SELECT through FROM folded))
    GROUP BY m ORDER BY m
"""


class SqliteSeries:
    """Raw readings and per-minute aggregates in one SQLite file; also the reader.

    A full or read-only disk (or a data dir that cannot be created) is an outage, not a crash:
    rows wait in a bounded buffer (oldest dropped first, counted) and are written when the disk
    takes them again; the cause is logged once and ``error`` says it meanwhile.
    """

    def __init__(self, path: Path, retention_s: float = 7 * 86400, buffer_rows: int = 200_000) -> None:
        self.path = path
        self.retention_s = retention_s
        self._lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        self.buffer: deque[Row] = deque(maxlen=buffer_rows)
        self.dropped = 0
        self.error = ""
        self._next_try = 0.0
        self._last_prune = 0.0
        self._last_fold = time.monotonic()
        with self._lock:
            self._outage_held(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # checkpoint the WAL every ~40 MB instead of ~4 MB: an index page dirtied by many
            # transactions is copied back to the database once per checkpoint (-25 % CPU a row)
            db.execute("PRAGMA wal_autocheckpoint=10000")
            db.executescript("""
                CREATE TABLE IF NOT EXISTS raw (device TEXT, name TEXT, t REAL, v REAL);
                CREATE INDEX IF NOT EXISTS raw_dev_t ON raw (device, t);
                CREATE TABLE IF NOT EXISTS minute (device TEXT, name TEXT, m INTEGER, n INTEGER, sum REAL,
                                                   min REAL, max REAL, PRIMARY KEY (device, m));
                CREATE TABLE IF NOT EXISTS folded (id INTEGER PRIMARY KEY CHECK (id = 0), through INTEGER NOT NULL);
                INSERT OR IGNORE INTO folded SELECT 0, COALESCE(MAX(rowid), 0) FROM raw;
            """)
        except BaseException:
            db.close()
            raise
        self.db = db

    def _outage_held(self, fn, *args) -> bool:
        """Run ``fn``; True when done, False when the disk refused it (logged once per cause)."""
        try:
            fn(*args)
        except (sqlite3.OperationalError, OSError) as e:
            if not (is_sqlite_outage(e) or getattr(e, "errno", None) in DISK_ERRNOS):
                raise
            why = f"time-series store {self.path} cannot be written: {e.strerror if isinstance(e, OSError) else e}"
            if why != self.error:
                log.error("%s; holding readings in memory (at most %d)", why, self.buffer.maxlen)
            self.error = why
            self._next_try = time.monotonic() + 2.0
            return False
        if self.error:
            log.warning("time-series store %s writable again; %d held readings written", self.path, len(self.buffer))
            self.error = ""
        return True

    def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        with self._lock:
            if not self.buffer and self.db is not None and self._outage_held(self._insert, rows):
                return
            for r in rows:
                if len(self.buffer) == self.buffer.maxlen:
                    self.dropped += 1
                self.buffer.append(r)
            self._flush()

    def flush(self) -> bool:
        """Write what the buffer holds, if the disk takes it. True when nothing is held."""
        with self._lock:
            return self._flush()

    def _flush(self) -> bool:
        if not self.buffer:
            return True
        if time.monotonic() < self._next_try:
            return False
        if self.db is None and not self._outage_held(self._open):
            return False
        if self._outage_held(self._insert, list(self.buffer)):
            self.buffer.clear()
        return not self.buffer

    def _insert(self, rows: Sequence[Row]) -> None:
        """Raw rows; every FOLD_S the rows since the last fold go into the minute aggregates.

        Why not a per-row upsert: it cost as much as the raw insert (a batch of 2,000 readings
        touches ~2,000 device-minutes); folded every few seconds by one statement, a minute is
        upserted once per fold. ``folded.through`` (the last rowid folded) moves in the fold's
        own transaction, so a crash folds nothing twice and nothing never; readers add the rows
        not folded yet (``minutes``).
        """
        with self.db:  # in index order: each index page is visited once, in sequence (-15 % a row)
            self.db.executemany("INSERT INTO raw VALUES (?, ?, ?, ?)", sorted(rows))
        if time.monotonic() - self._last_fold >= FOLD_S:
            self._fold()

    def _fold(self) -> None:
        self._last_fold = time.monotonic()
        with self.db:
            through = self.db.execute("SELECT through FROM folded").fetchone()[0]
            last = self.db.execute("SELECT COALESCE(MAX(rowid), 0) FROM raw").fetchone()[0]
            if last > through:
                self.db.execute(_FOLD_MINUTES, (through, last))
                self.db.execute("UPDATE folded SET through = ?", (last,))
            now = time.time()
            if now - self._last_prune > 600:  # after the fold: a pruned row has been counted
                self._last_prune = now
                self.db.execute("DELETE FROM raw WHERE t < ?", (now - self.retention_s,))

    def window(self, device: str, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self.db is None:
                return np.array([]), np.array([])
            rows = self.db.execute("SELECT t, v FROM raw WHERE device = ? AND t BETWEEN ? AND ? ORDER BY t",
                                   (device, t0, t1)).fetchall()
        arr = np.array(rows, dtype=float).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def minutes(self, device: str, t0: float, t1: float) -> list[dict]:
        with self._lock:
            if self.db is None:
                return []
            m0, m1 = int(t0 // 60), int(t1 // 60)
            rows = self.db.execute(_MINUTES_READ, (device, m0, m1, device, m0 * 60.0, (m1 + 1) * 60.0)).fetchall()
        return [{"t": m * 60.0, "count": n, "mean": s / n, "min": lo, "max": hi} for m, n, s, lo, hi in rows]

    def close(self) -> None:
        with self._lock:
            self._next_try = 0.0
            self._flush()
            if self.buffer:
                log.error("%d readings never reached the time-series store (%s)", len(self.buffer), self.error)
            if self.db is not None:
                self._outage_held(self._fold)
                self.db.close()


class InfluxSeries:
    """InfluxDB 2 writer with batching, retries and a bounded buffer for outages."""

    def __init__(self, settings: Settings, buffer_points: int = 200_000) -> None:
        from influxdb_client import InfluxDBClient

        self.settings = settings
        self.client = InfluxDBClient(url=settings.tsdb_url, token=settings.tsdb_token.get() or "none",
                                     org=settings.tsdb_org, timeout=5000)
        self.buffer: deque[str] = deque(maxlen=buffer_points)  # oldest dropped first, counted
        self.dropped = 0
        self._next_try = 0.0
        self._backoff = 0.5

    def write(self, rows: Sequence[Row]) -> None:
        for d, n, t, v in rows:
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped += 1
            self.buffer.append(f"reading,device={d},kind={n} value={v!r} {int(t * 1e9)}")
        self.flush()

    def flush(self) -> bool:
        """Send what is buffered; on failure keep it and back off. True when empty."""
        if not self.buffer or time.monotonic() < self._next_try:
            return not self.buffer
        from influxdb_client.client.write_api import SYNCHRONOUS

        api = self.client.write_api(write_options=SYNCHRONOUS)
        while self.buffer:
            batch = [self.buffer[i] for i in range(min(5000, len(self.buffer)))]
            try:
                api.write(bucket=self.settings.tsdb_bucket, org=self.settings.tsdb_org, record=batch)
            except Exception as e:  # noqa: BLE001 - any failure keeps the data buffered
                self._next_try = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, 30.0)
                log.warning("time-series write failed (%s); %d points buffered", e, len(self.buffer))
                return False
            for _ in batch:
                self.buffer.popleft()
            self._backoff = 0.5
        return True

    def window(self, device: str, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        q = (f'from(bucket: "{self.settings.tsdb_bucket}") |> range(start: {int(t0)}, stop: {int(t1) + 1}) '
             f'|> filter(fn: (r) => r._measurement == "reading" and r.device == "{device}")')
        ts, vs = [], []
        for table in self.client.query_api().query(q, org=self.settings.tsdb_org):
            for rec in table.records:
                ts.append(rec.get_time().timestamp())
                vs.append(float(rec.get_value()))
        return np.array(ts), np.array(vs)

    def minutes(self, device: str, t0: float, t1: float) -> list[dict]:
        t, v = self.window(device, t0, t1)
        out = []
        for m in np.unique((t // 60).astype(int)):
            sel = v[(t // 60).astype(int) == m]
            out.append({"t": m * 60.0, "count": len(sel), "mean": float(sel.mean()), "min": float(sel.min()),
                        "max": float(sel.max())})
        return out

    def close(self) -> None:
        self.flush()
        self.client.close()


def _open(settings: Settings) -> SqliteSeries | InfluxSeries:
    url = settings.tsdb
    if url.startswith(("http://", "https://")):
        return InfluxSeries(settings)
    return SqliteSeries(Path(url.removeprefix("sqlite:///").removeprefix("sqlite://")))


open_writer = _open
open_reader = _open
