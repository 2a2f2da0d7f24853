"""The append-only, hash-chained audit log: every state change and every message sent.

Each entry's hash is sha256 over its canonical JSON (seq, time, actor, action, subject, body)
and the previous entry's hash, so changing, removing or reordering any entry breaks the chain
from that entry on; :func:`verify` names the first bad one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from alerts.store import Cursor, Store, dumps

GENESIS = "0" * 64


def entry_hash(seq: int, t: float, actor: str, action: str, subject: str, body: str, prev: str) -> str:
    canon = dumps({"seq": seq, "t": repr(float(t)), "actor": actor, "action": action, "subject": subject,
                   "body": body, "prev": prev})
    return hashlib.sha256(canon.encode()).hexdigest()


def append(cur: Cursor, t: float, actor: str, action: str, subject: str, body: dict) -> str:
    """Append inside the caller's transaction (the store serialises writers)."""
    last = cur.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    text = dumps(body)
    h = entry_hash(seq, t, actor, action, subject, text, prev)
    cur.execute("INSERT INTO audit (seq, t, actor, action, subject, body, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, t, actor, action, subject, text, prev, h))
    return h


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    entries: int
    first_bad: int | None = None
    problem: str = ""


def verify(store: Store) -> Verdict:
    prev, expected_seq, n = GENESIS, 1, 0
    for seq, t, actor, action, subject, body, p, h in store.read(
            "SELECT seq, t, actor, action, subject, body, prev, hash FROM audit ORDER BY seq"):
        n += 1
        if seq != expected_seq:
            return Verdict(False, n, seq, f"entry {expected_seq} is missing (next is {seq})")
        if p != prev:
            return Verdict(False, n, seq, "its link to the previous entry is broken")
        if entry_hash(seq, t, actor, action, subject, body, p) != h:
            return Verdict(False, n, seq, "its content does not match its hash (altered)")
        try:
            json.loads(body)
        except ValueError:
            return Verdict(False, n, seq, "its body is not JSON")
        prev, expected_seq = h, seq + 1
    return Verdict(True, n)
