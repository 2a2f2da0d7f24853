"""Mosquitto's password file and ACL file, read the way Mosquitto reads them.

Production runs Mosquitto with ``deploy/mosquitto/passwd`` and ``deploy/mosquitto/acl``; the
embedded broker (amqtt) loads the very same files through :mod:`citybrain.amqtt_plugins`, so a
device that may not publish to another device's topic in production may not on a laptop either,
and one set of files is tested against both brokers.

Password file: ``user:$7$iterations$salt$hash`` lines as written by ``mosquitto_passwd``
(PBKDF2-HMAC-SHA512, base64 salt and hash). ACL file: ``topic [read|write|readwrite|deny] T``
lines before any ``user`` line apply to anonymous clients, after ``user NAME`` to that user;
``pattern ...`` lines apply to every client with ``%u`` (user name) and ``%c`` (client id)
substituted. A ``deny`` rule wins over any grant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from citybrain.exceptions import ConfigError

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default
ACCESSES = {"read", "write", "readwrite", "deny"}


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """A ``$7$`` hash that ``mosquitto`` accepts in its password file."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches a ``$7$`` (PBKDF2-SHA512) or ``$6$`` (salted SHA-512) hash."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, want = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
        elif len(parts) == 4 and parts[1] == "6":  # mosquitto 1.x: sha512(password + salt)
            salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            got = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def load_passwords(path: str | Path) -> dict[str, str]:
    """user -> encoded hash; a malformed line is an error naming the line."""
    users: dict[str, str] = {}
    for no, line in enumerate(_lines(path), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, encoded = line.strip().partition(":")
        if not sep or not user or not encoded.startswith(("$7$", "$6$")):
            raise ConfigError(f"{path}:{no}: expected 'user:$7$...' as written by mosquitto_passwd")
        users[user] = encoded
    return users


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest); ``$`` topics need an explicit filter."""
    if topic.startswith("$") and not filter_.startswith("$"):
        return False
    f, t = filter_.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


def filter_covers(acl_filter: str, requested: str) -> bool:
    """True when every topic the ``requested`` subscription filter can match is within ``acl_filter``."""
    a, r = acl_filter.split("/"), requested.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(r):
            return False
        if level == "+":
            if r[i] == "#":
                return False
            continue
        if level != r[i]:
            return False
    return len(a) == len(r)


@dataclass(frozen=True, slots=True)
class Rule:
    access: str  # read | write | readwrite | deny
    topic: str

    def grants(self, access: str) -> bool:
        return self.access == "readwrite" or self.access == access


@dataclass(frozen=True, slots=True)
class Acl:
    anonymous: tuple[Rule, ...] = ()
    users: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    patterns: tuple[Rule, ...] = ()

    def _rules(self, user: str | None, client_id: str) -> list[Rule]:
        if not user:
            return list(self.anonymous)
        own = list(self.users.get(user, ()))
        for p in self.patterns:
            # like mosquitto, a pattern never expands to a topic with wildcards from the user name
            if ("%u" in p.topic and any(ch in user for ch in "+#/")) or \
                    ("%c" in p.topic and any(ch in client_id for ch in "+#/")):
                continue
            own.append(Rule(p.access, p.topic.replace("%u", user).replace("%c", client_id)))
        return own

    def may_publish(self, user: str | None, client_id: str, topic: str) -> bool:
        rules = self._rules(user, client_id)
        if any(r.access == "deny" and topic_matches(r.topic, topic) for r in rules):
            return False
        return any(r.grants("write") and topic_matches(r.topic, topic) for r in rules)

    def may_receive(self, user: str | None, client_id: str, topic: str) -> bool:
        rules = self._rules(user, client_id)
        if any(r.access == "deny" and topic_matches(r.topic, topic) for r in rules):
            return False
        return any(r.grants("read") and topic_matches(r.topic, topic) for r in rules)

    def may_subscribe(self, user: str | None, client_id: str, filter_: str) -> bool:
        """A subscription is allowed when it lies within some read rule (Mosquitto 2 semantics)."""
        if filter_.startswith("$share/"):  # a shared subscription is checked without its group
            filter_ = filter_.split("/", 2)[2] if filter_.count("/") >= 2 else filter_
        rules = self._rules(user, client_id)
        return any(r.grants("read") and filter_covers(r.topic, filter_) for r in rules)


def load_acl(path: str | Path) -> Acl:
    anonymous: list[Rule] = []
    users: dict[str, list[Rule]] = {}
    patterns: list[Rule] = []
    current: list[Rule] = anonymous
    for no, raw in enumerate(_lines(path), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "user":
            if not rest:
                raise ConfigError(f"{path}:{no}: 'user' needs a name")
            current = users.setdefault(rest, [])
            continue
        if word not in {"topic", "pattern"} or not rest:
            raise ConfigError(f"{path}:{no}: expected 'user NAME', 'topic [ACCESS] TOPIC' or 'pattern [ACCESS] TOPIC'")
        access, _, topic = rest.partition(" ")
        if not topic.strip():
            access, topic = "readwrite", access
        access, topic = access.strip(), topic.strip()
        if access not in ACCESSES:
            raise ConfigError(f"{path}:{no}: unknown access {access!r} (read, write, readwrite, deny)")
        (patterns if word == "pattern" else current).append(Rule(access, topic))
    return Acl(tuple(anonymous), {u: tuple(r) for u, r in users.items()}, tuple(patterns))


def _lines(path: str | Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
