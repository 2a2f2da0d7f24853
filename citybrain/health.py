"""Heartbeats and counters that components leave for the supervisor and the screen.

Each component writes ``{run_dir}/{name}.json`` (atomically) every second or so with its pid,
time and counters. The command center reads them for ``GET /api/health``; a file older than
``STALE_S`` means the component is down. Files, not a broker, so that health is visible even
when the brokers are what failed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STALE_S = 10.0


def write_stats(run_dir: Path, name: str, stats: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    body = {"name": name, "pid": os.getpid(), "t": time.time(), **stats}
    tmp = run_dir / f".{name}.json.tmp"
    tmp.write_text(json.dumps(body, default=str))
    os.replace(tmp, run_dir / f"{name}.json")


def read_all(run_dir: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not run_dir.is_dir():
        return out
    for p in run_dir.glob("*.json"):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    return out


def is_fresh(stats: dict[str, Any], now: float | None = None) -> bool:
    """Its heartbeat is recent (whatever state it reports)."""
    now = time.time() if now is None else now
    return now - float(stats.get("t", 0)) < STALE_S


def is_up(stats: dict[str, Any], now: float | None = None) -> bool:
    return is_fresh(stats, now) and stats.get("state", "up") == "up"
