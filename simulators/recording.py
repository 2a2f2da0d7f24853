"""Record any MQTT feed to a compact file and read it back (gzip JSON lines, payloads base64).

A recording keeps topic, payload, QoS, retain flag and receive time; replay keeps the relative
timing (divided by the speed) and never touches payloads, so event times are preserved.
"""

from __future__ import annotations

import base64
import binascii
import csv
import gzip
import json
import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

from citybrain import mqtt
from citybrain.city import City
from citybrain.exceptions import CitybrainError
from citybrain.settings import Settings
from simulators.feed import Message, senml


def record(settings: Settings, out: Path, topic: str = "city/#", stop: threading.Event | None = None,
           max_messages: int | None = None, duration: float | None = None) -> int:
    """Subscribe and write every message to ``out`` until stopped; returns the count."""
    stop = stop or threading.Event()
    n = 0
    lock = threading.Lock()
    f = gzip.open(out, "wt", encoding="utf-8")

    def on_message(c, u, m):
        nonlocal n
        try:
            line = json.dumps({"t": time.time(), "topic": m.topic, "qos": m.qos, "retain": bool(m.retain),
                               "p": base64.b64encode(m.payload).decode()}, separators=(",", ":"))
            with lock:
                f.write(line + "\n")
                n += 1
                if max_messages and n >= max_messages:
                    stop.set()
        except Exception:  # noqa: BLE001 - a paho callback never raises
            pass

    c = mqtt.make_client(settings, f"citybrain-recorder-{int(time.time())}")
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p=None: rc.is_failure or cl.subscribe(topic, qos=1)
    mqtt.connect_and_wait(c, settings)
    stop.wait(duration)
    c.loop_stop()
    c.disconnect()
    with lock:
        f.close()
    return n


def read(path: Path) -> Iterator[Message]:
    """Messages of a recording; ``t`` is the receive time, used only for relative pacing."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for k, line in enumerate(f, 1):
                try:
                    yield _message(json.loads(line))
                except (ValueError, KeyError, TypeError, binascii.Error) as e:
                    raise CitybrainError(f"{path}: line {k} is not a recorded message ({e})") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise CitybrainError(f"{path}: not a readable recording ({e})") from None


def _message(d: dict) -> Message:
    """One recorded line, checked the way a broker would check the publish it replays."""
    t, topic, qos, retain = float(d["t"]), d["topic"], d["qos"], d["retain"]
    if not math.isfinite(t):
        raise ValueError(f"t must be a finite number, got {d['t']!r}")
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"topic must be a non-empty MQTT topic without wildcards, got {topic!r}")
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
    if not isinstance(retain, bool):
        raise ValueError(f"retain must be true or false, got {retain!r}")
    return Message(t, topic, base64.b64decode(d["p"], validate=True), qos, retain)


def count(path: Path) -> int:
    """Number of messages, reading (and so validating) every line: a replay checks its file
    this way before it publishes anything, so a corrupt line never leaves a half-replayed feed."""
    return sum(1 for _ in read(path))


def csv_feed(path: Path, city: City, device: str, shift_to: float | None = None) -> Iterator[Message]:
    """A timestamped CSV (``timestamp,value``, e.g. NAB) as the SenML feed of a city device."""
    from datetime import datetime

    d = city.devices.get(device)
    if d is None or d.is_camera:
        raise CitybrainError(f"{device!r} is not a sensor of the city")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"timestamp", "value"} <= set(reader.fieldnames or ()):
            raise CitybrainError(f"{path}: line 1: need timestamp,value as the header, got {reader.fieldnames}")
        for k, row in enumerate(reader, 2):
            try:
                ts = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC).timestamp()
                value = float(row["value"])
                if not math.isfinite(value):
                    raise ValueError(f"value {row['value']!r} is not a finite number")
                rows.append((ts, value))
            except (KeyError, ValueError, TypeError) as e:
                raise CitybrainError(f"{path}: line {k}: need timestamp,value ({e})") from None
    if not rows:
        return
    offset = (shift_to - rows[-1][0]) if shift_to is not None else 0.0
    for ts, v in rows:
        t = ts + offset
        yield Message(t, f"city/sensors/{device}", senml(device, d.kind, d.unit, t, v))
