"""`citybrain up --ingest-processes 2` on Mosquitto: two ingest children share the feed and the
health endpoint reports them as one stage (counts add up)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import free_port
from tests.ingest_helpers import TINY, publisher, wait_for

pytestmark = pytest.mark.slow


def test_up_with_two_ingest_processes_shares_the_feed(settings, tmp_path):
    http, token = free_port(), "scale-token"
    data = tmp_path / "data"
    up = subprocess.Popen([sys.executable, "-m", "citybrain.cli", "up", "--city", str(TINY), "--data-dir", str(data),
                           "--http-port", str(http), "--mqtt", settings.mqtt_url, "--kafka", settings.kafka,
                           "--topic-prefix", settings.topic_prefix + "up", "--admin-token", token, "--no-simulate",
                           "--ingest-processes", "2"], stdout=open(tmp_path / "up.log", "wb"), stderr=subprocess.STDOUT)

    def health() -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{http}/api/health", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def ready():
        try:
            h = health()
        except OSError:
            return None
        return h if {"ingest", "ingest-2"} <= {k for k, v in h["components"].items() if v == "up"} else None

    try:
        wait_for(ready, 90)
        pub = publisher(settings, "scale-up-pub")
        n, base = 2000, time.time() - 600
        infos = [pub.publish("city/sensors/wl-0001", json.dumps(
            [{"bn": "wl-0001:", "bt": base + k * 0.1, "n": "water_level", "u": "m", "v": 1.0}]), qos=1) for k in range(n)]
        for i in infos:
            i.wait_for_publish(30)
        pub.disconnect()
        h = wait_for(lambda: (x := health())["accepted"] >= n and x, 60)
        assert h["accepted"] == n
        parts = [json.loads((data / "run" / f"{name}.json").read_text())["accepted"] for name in ("ingest", "ingest-2")]
        assert sum(parts) == n and min(parts) > 0, parts  # both took a share
    finally:
        up.terminate()
        assert up.wait(60) == 0, (tmp_path / "up.log").read_text()[-3000:]
