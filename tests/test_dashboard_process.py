"""``python -m dashboard`` as the supervisor runs it: settings from the environment, the API on
its port, a heartbeat every second, a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from citybrain import health
from citybrain.settings import Settings
from tests.conftest import ROOT, free_port, wait_port


def test_process_serves_api_beats_and_stops_on_sigterm(tmp_path, mosquitto):
    port = free_port()
    settings = Settings().replace(data_dir=tmp_path / "data", http_port=port, admin_token="proc-token",
                                  mqtt_url=f"mqtt://{mosquitto[0]}:{mosquitto[1]}")
    env = {**os.environ, **settings.to_env()}
    proc = subprocess.Popen([sys.executable, "-m", "dashboard"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, timeout=30)
        r = requests.get(f"http://127.0.0.1:{port}/api/health", headers={"Authorization": "Bearer proc-token"},
                         timeout=10)
        assert r.status_code == 200 and r.json()["components"]["dashboard"] == "up"
        assert requests.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 401
        login = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert login.status_code == 200 and "Sign in" in login.text  # redirected to the login page
        deadline = time.time() + 5
        while "dashboard" not in health.read_all(settings.run_dir) and time.time() < deadline:
            time.sleep(0.1)
        assert health.is_up(health.read_all(settings.run_dir)["dashboard"])
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)  # generous: CI machines are shared
    assert proc.returncode == 0, out.decode()[-2000:]
    assert health.read_all(settings.run_dir)["dashboard"]["state"] == "down"
