"""Logging set-up shared by every process: one line per record, component name in it."""

from __future__ import annotations

import logging
import os


def setup(component: str, level: str | None = None) -> None:
    level = level or os.environ.get("CITYBRAIN_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)-7s {component} %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("aiokafka", "kafka", "urllib3", "werkzeug", "amqtt", "faust", "mode", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def truncate(payload: bytes | str, limit: int = 200) -> str:
    """A payload for a log line: never the whole of an oversize or binary message."""
    if isinstance(payload, bytes):
        payload = payload[: limit * 2].decode("utf-8", "replace")
    return payload if len(payload) <= limit else payload[:limit] + f"...(+{len(payload) - limit})"
