"""Heartbeats and counters that components leave for the supervisor and the screen.

Each component writes ``{run_dir}/{name}.json`` (atomically) every second or so with its pid,
time and counters. The command center reads them for ``GET /api/health``; a file older than
``STALE_S`` means the component is down. Files, not a broker, so that health is visible even
when the brokers are what failed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STALE_S = 10.0
_failing: dict[Path, str] = {}  # heartbeat file -> why it cannot be written now (logged once)


def write_stats(run_dir: Path, name: str, stats: dict[str, Any]) -> bool:
    """Write the heartbeat; False when the data dir refuses it (full, read-only).

    Never raises for that: a component whose disk is full keeps doing what does not need the
    disk (the supervisor keeps supervising, the incident service keeps holding its input in
    Kafka). The cause is logged once, and again when the file can be written again; meanwhile
    the heartbeat goes stale and ``/api/health`` shows the component down.
    """
    target = run_dir / f"{name}.json"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        body = {"name": name, "pid": os.getpid(), "t": time.time(), **stats}
        tmp = run_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(body, default=str))
        os.replace(tmp, target)
    except OSError as e:
        why = e.strerror or str(e)
        if _failing.get(target) != why:
            log.error("cannot write heartbeat %s: %s; the component runs on, shown down until it can", target, why)
            _failing[target] = why
        return False
    if _failing.pop(target, None):
        log.warning("heartbeat %s written again", target)
    return True


def write_error(run_dir: Path) -> str | None:
    """Why this process cannot write its heartbeat into ``run_dir`` now (None when it can)."""
    return next((why for target, why in _failing.items() if target.parent == run_dir), None)


def read_all(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every heartbeat in ``run_dir``.

    When this process (the command center, which beats there every second) cannot write there
    either, a stale heartbeat gets ``heartbeat_error`` with the cause ("No space left on
    device"): the component cannot say it, its file is what the disk refuses, and "no
    heartbeat" alone sends an operator looking for a dead process."""
    out: dict[str, dict[str, Any]] = {}
    if not run_dir.is_dir():
        return out
    for p in run_dir.glob("*.json"):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    why = write_error(run_dir)
    if why:
        now = time.time()
        for st in out.values():
            if isinstance(st, dict) and not is_fresh(st, now):
                st["heartbeat_error"] = (f"no heartbeat for {now - float(st.get('t', 0)):.0f} s: "
                                         f"the data dir cannot be written ({why})")
    return out


def is_fresh(stats: dict[str, Any], now: float | None = None) -> bool:
    """Its heartbeat is recent (whatever state it reports)."""
    now = time.time() if now is None else now
    return now - float(stats.get("t", 0)) < STALE_S


def is_up(stats: dict[str, Any], now: float | None = None) -> bool:
    return is_fresh(stats, now) and stats.get("state", "up") == "up"
