"""The incident store: SQLite by default, PostgreSQL by URL, one schema, one small SQL dialect.

Why a version column: the incident service process and the command-center process both write
incidents. Every update is ``UPDATE ... WHERE id = ? AND version = ?``; a writer that lost the
race re-reads and re-applies its change, so no update is ever lost.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from citybrain.exceptions import DISK_ERRNOS, StoreUnavailable, is_sqlite_outage

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS incidents (id TEXT PRIMARY KEY, state TEXT NOT NULL, event TEXT NOT NULL,
        area TEXT NOT NULL, started_at DOUBLE PRECISION, updated_at DOUBLE PRECISION, version INTEGER NOT NULL,
        body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS incidents_state ON incidents (state)",
    # a warning looks for open incidents of its event in its grid and the neighbours: without this
    # it read every open incident of the event (a storm's hundreds, per warning)
    "CREATE INDEX IF NOT EXISTS incidents_event_area ON incidents (event, area)",
    "CREATE TABLE IF NOT EXISTS warnings_seen (id TEXT PRIMARY KEY, incident TEXT, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pending (id TEXT PRIMARY KEY, body TEXT NOT NULL, first_t DOUBLE PRECISION, n INTEGER)",
    "CREATE TABLE IF NOT EXISTS units (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, scope TEXT NOT NULL, value TEXT NOT NULL,
        until_t DOUBLE PRECISION NOT NULL, body TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, t DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL)""",
]


class Conflict(Exception):
    """Another writer changed the row first (optimistic concurrency)."""


class Store:
    """A connection per thread; ``tx()`` gives a write transaction that serialises writers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = url.startswith(("postgresql://", "postgres://"))
        self._local = threading.local()
        with self.tx() as c:
            for stmt in SCHEMA:
                c.execute(stmt)

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._unavailable_as_error():
                if self.pg:
                    import psycopg

                    conn = psycopg.connect(self.url, autocommit=False, connect_timeout=5)
                else:
                    conn = self._sqlite_connect()
            self._local.conn = conn
        return conn

    def _sqlite_connect(self) -> sqlite3.Connection:
        """A WAL connection, or none at all: one left half-open by a full disk would keep its locks
        until the garbage collector found it, stalling every other connection."""
        path = Path(self.url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _unavailable_as_error(self) -> Iterator[None]:
        """Connection loss, a stopped server, a full or read-only disk -> :class:`StoreUnavailable`.

        The broken connection is dropped so that the next call reconnects; SQL errors (bugs)
        pass through unchanged.
        """
        try:
            yield
        except Exception as e:
            if not _is_outage(e):
                raise
            self.close()
            raise StoreUnavailable(f"incident store {redact_url(self.url)} is unavailable: "
                                   f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from e

    @contextmanager
    def tx(self) -> Iterator[Cursor]:
        conn = self._conn()
        with self._unavailable_as_error():
            if self.pg:
                try:
                    with conn.cursor() as cur:
                        # one writer at a time on the audit chain and incident merges
                        cur.execute("SELECT pg_advisory_xact_lock(7207)")
                        yield Cursor(cur, True)
                    conn.commit()
                except BaseException:
                    with contextlib.suppress(Exception):  # the connection may be gone
                        conn.rollback()
                    raise
            else:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield Cursor(conn.cursor(), False)
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                    raise

    def read(self, sql: str, args: tuple = ()) -> list[tuple]:
        conn = self._conn()
        with self._unavailable_as_error():
            if self.pg:
                with conn.cursor() as cur:
                    cur.execute(sql.replace("?", "%s"), args)
                    rows = cur.fetchall()
                conn.commit()
                return rows
            return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
            self._local.conn = None


def _is_outage(e: BaseException) -> bool:
    if isinstance(e, sqlite3.OperationalError):
        return is_sqlite_outage(e)
    mod = type(e).__module__ or ""
    if mod.startswith("psycopg"):
        import psycopg

        return isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError))
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:  # e.g. the data dir cannot be created
        return True
    return isinstance(e, (ConnectionError, TimeoutError))


def redact_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    head, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    cred, _, host = rest.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{head}{sep}{user}:***@{host}" if ":" in cred else url


class Cursor:
    def __init__(self, cur, pg: bool) -> None:
        self.cur, self.pg = cur, pg
        self.outbox: list[tuple[str, bytes]] = []  # messages to publish once the transaction commits

    @property
    def insertion_order(self) -> str:
        """An ORDER BY term for "oldest row first": SQLite's rowid; PostgreSQL has none (its scans
        came in no defined order), so the id stands in."""
        return "id" if self.pg else "rowid"

    @contextmanager
    def savepoint(self, undo_on: tuple[type[BaseException], ...]) -> Iterator[None]:
        """A part of the transaction: an error of ``undo_on`` undoes it alone (its statements and its
        queued messages) and is re-raised; any other error is left to undo the whole transaction."""
        mark = len(self.outbox)
        self.execute("SAVEPOINT part")
        try:
            yield
        except undo_on:
            self.execute("ROLLBACK TO SAVEPOINT part")
            self.execute("RELEASE SAVEPOINT part")
            del self.outbox[mark:]
            raise
        self.execute("RELEASE SAVEPOINT part")

    def execute(self, sql: str, args: tuple = ()) -> Cursor:
        self.cur.execute(sql.replace("?", "%s") if self.pg else sql, args)
        return self

    def fetchall(self) -> list[tuple]:
        return self.cur.fetchall()

    def fetchone(self) -> tuple | None:
        return self.cur.fetchone()

    @property
    def rowcount(self) -> int:
        return self.cur.rowcount


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)
