"""Record any MQTT feed to a compact file and read it back (gzip JSON lines, payloads base64).

A recording keeps topic, payload, QoS, retain flag and receive time; replay keeps the relative
timing (divided by the speed) and never touches payloads, so event times are preserved.
"""

from __future__ import annotations

import base64
import csv
import gzip
import json
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
    c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
    mqtt.connect(c, settings)
    c.loop_start()
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
                    d = json.loads(line)
                    yield Message(float(d["t"]), d["topic"], base64.b64decode(d["p"]), int(d["qos"]), bool(d["retain"]))
                except (ValueError, KeyError, TypeError) as e:
                    raise CitybrainError(f"{path}: line {k} is not a recorded message ({e})") from None
    except (OSError, EOFError) as e:
        raise CitybrainError(f"{path}: not a readable recording ({e})") from None


def count(path: Path) -> int:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return sum(1 for _ in f)


def csv_feed(path: Path, city: City, device: str, shift_to: float | None = None) -> Iterator[Message]:
    """A timestamped CSV (``timestamp,value``, e.g. NAB) as the SenML feed of a city device."""
    from datetime import datetime

    d = city.devices.get(device)
    if d is None or d.is_camera:
        raise CitybrainError(f"{device!r} is not a sensor of the city")
    rows = []
    with open(path, newline="") as f:
        for k, row in enumerate(csv.DictReader(f), 2):
            try:
                ts = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC).timestamp()
                rows.append((ts, float(row["value"])))
            except (KeyError, ValueError) as e:
                raise CitybrainError(f"{path}: line {k}: need timestamp,value ({e})") from None
    if not rows:
        return
    offset = (shift_to - rows[-1][0]) if shift_to is not None else 0.0
    for ts, v in rows:
        t = ts + offset
        yield Message(t, f"city/sensors/{device}", senml(device, d.kind, d.unit, t, v))
