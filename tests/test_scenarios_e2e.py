"""The scenario suite through the whole system, scored: every scenario the small city can host
is found in the right (or neighbouring) grid with a bounded delay, and a quiet stretch raises
no false incident. The feed runs at 25x real time in the past, so this also proves that event
time, not the wall clock, drives detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from citybrain.city import load_city
from simulators.score import score
from tests.ingest_helpers import TINY
from tests.test_system_e2e import TESTER, TESTER_PASSWORD, System

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    s = System(tmp_path_factory.mktemp("scenarios"))
    s.start()
    yield s
    s.stop()


def test_scenario_suite_is_found_and_quiet_time_stays_quiet(system, tmp_path):
    truth_file = tmp_path / "truth.json"
    duration = 30 + 300 * 4 + 60  # the tiny city hosts the first four scenarios of the suite
    cmd = [sys.executable, "-m", "citybrain.cli", "simulate", "--city", str(TINY), "--mqtt",
           f"mqtt://127.0.0.1:{system.mqtt_port}", "--mqtt-protocol", "3.1.1", "--scenario", "suite",
           "--speed", "25", "--duration", str(duration), "--scenario-duration", "240", "--truth", str(truth_file)]
    # the system's broker enforces the production ACL: the simulator logs in as the test user
    env = {**os.environ, "CITYBRAIN_MQTT_USERNAME": TESTER, "CITYBRAIN_MQTT_PASSWORD": TESTER_PASSWORD}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    truth = json.loads(truth_file.read_text())
    assert {t["event"] for t in truth} >= {"flood", "fire", "gas_leak", "air_pollution"}
    deadline = time.time() + 60
    while time.time() < deadline:
        incidents = system.api("/api/incidents?state=all")
        result = score(truth, incidents, load_city(TINY), device_hours=len(load_city(TINY).devices) * duration / 3600)
        if result["missed"] == 0:
            break
        time.sleep(1)
    assert result["missed"] == 0, result
    for row in result["events"]:
        assert row["delay_s"] is not None and -60 <= row["delay_s"] <= 120, row
    assert result["false_incidents"] == 0, [i for i in incidents if i["id"] in result["false_ids"]]
