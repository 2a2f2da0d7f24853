"""Users, roles and API tokens of the command center, in a small SQLite file under ``data_dir``.

Why a separate store from the incidents: who may look at or act on the city is the command
center's business, not the incident service's; the incident service only learns the actor's
name for its audit log. Passwords are hashed with scrypt (slow on purpose, salted); API tokens
are random 256-bit strings, so a fast SHA-256 is enough to store them without keeping them.
The bootstrap admin token (``settings.admin_token``) always works, as an admin named ``admin``,
and is also the bootstrap password of the ``admin`` login, so a fresh install can be entered.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from citybrain.clock import Clock, WallClock
from citybrain.exceptions import CitybrainError, NotFound

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class BadInput(CitybrainError):
    """A request's content is wrong (HTTP 400); the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (screen login) or a token holder (API)."""

    name: str
    role: str

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def check_role(role: object) -> str:
    if role not in ROLES:
        raise BadInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return str(role)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadInput("name must be 1-64 characters of letters, digits, '_', '.', '@' or '-'")
    return name


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AuthStore:
    """Users and tokens. Thread-safe (the web server answers from several threads)."""

    def __init__(self, path: Path, admin_token: str = "", clock: Clock | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        self._admin_token = admin_token
        self.clock = clock or WallClock()
        with self._lock:
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL,
                    salt BLOB NOT NULL, hash BLOB NOT NULL, created REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, digest TEXT UNIQUE NOT NULL,
                    name TEXT NOT NULL, role TEXT NOT NULL, created REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                """
            )

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ secrets

    def session_secret(self) -> str:
        """The key that signs login cookies, kept across restarts so logins survive them."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='session_secret'").fetchone()
            if row:
                return row[0]
            value = secrets.token_hex(32)
            self._db.execute("INSERT INTO meta VALUES ('session_secret', ?)", (value,))
            return value

    # ------------------------------------------------------------------ users

    def add_user(self, name: object, password: object, role: object) -> Principal:
        name, role = check_name(name), check_role(role)
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise BadInput(f"password must be a string of at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?, ?)",
                             (name, role, salt, _hash_password(password, salt), self.clock.now()))
        return Principal(name, role)

    def _delete(self, table: str, key: str, value: str, what: str) -> None:
        with self._lock:
            if self._db.execute(f"DELETE FROM {table} WHERE {key}=?", (value,)).rowcount == 0:  # noqa: S608
                raise NotFound(f"no {what} {value!r}")

    def _listing(self, table: str, cols: tuple[str, ...], order: str) -> list[dict]:
        """Rows without their secrets (fixed table and column names, never user input)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}").fetchall()  # noqa: S608
        return [dict(zip(cols, r)) for r in rows]

    def remove_user(self, name: str) -> None:
        self._delete("users", "name", name, "user")

    def users(self) -> list[dict]:
        return self._listing("users", ("name", "role", "created"), "name")

    def login(self, name: str, password: str) -> Principal | None:
        """The user if the password is right; the bootstrap admin token logs in as ``admin``."""
        with self._lock:
            row = self._db.execute("SELECT role, salt, hash FROM users WHERE name=?", (name,)).fetchone()
        if row:
            role, salt, digest = row
            return Principal(name, role) if hmac.compare_digest(_hash_password(password, salt), digest) else None
        if name == "admin" and self._admin_token and hmac.compare_digest(password, self._admin_token):
            return Principal("admin", "admin")
        return None

    def role_of(self, name: str) -> str | None:
        """The user's current role (None: no such user any more), so that a removed user or a
        changed role takes effect on the next request, not at the next login."""
        with self._lock:
            row = self._db.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
        if row:
            return row[0]
        return "admin" if name == "admin" and self._admin_token else None

    # ------------------------------------------------------------------ tokens

    def issue_token(self, name: object, role: object) -> tuple[str, str]:
        """A new API token for ``name``: returns (token id, token). The token is shown once."""
        name, role = check_name(name), check_role(role)
        token, tid = "cb_" + secrets.token_urlsafe(32), secrets.token_hex(6)
        with self._lock:
            self._db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
                             (tid, _token_digest(token), name, role, self.clock.now()))
        return tid, token

    def revoke_token(self, tid: str) -> None:
        self._delete("tokens", "id", tid, "token")

    def tokens(self) -> list[dict]:
        return self._listing("tokens", ("id", "name", "role", "created"), "created")

    def by_token(self, token: str) -> Principal | None:
        if not token:
            return None
        if self._admin_token and hmac.compare_digest(token, self._admin_token):
            return Principal("admin", "admin")
        with self._lock:
            row = self._db.execute("SELECT name, role FROM tokens WHERE digest=?", (_token_digest(token),)).fetchone()
        return Principal(*row) if row else None
