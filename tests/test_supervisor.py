"""The supervisor restarts a child that dies, with backoff, and stops everything cleanly."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from citybrain.exceptions import ComponentStartError
from citybrain.supervisor import Child, Supervisor, port_free

SLEEPER = [sys.executable, "-c", "import time, signal, sys; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(600)"]


def _sup(tmp_path):
    from citybrain.settings import Settings
    from tests.conftest import free_port

    s = Settings().replace(data_dir=tmp_path / "d", mqtt_url="mqtt://127.0.0.1:1", kafka_bootstrap="127.0.0.1:1",
                           http_port=free_port(), simulate=False)
    return Supervisor(s)


def _wait(pred, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_killed_child_comes_back_with_backoff(tmp_path):
    sup = _sup(tmp_path)
    child = Child("sleeper", SLEEPER)
    sup.children = [child]
    sup._start_blocking(child)
    first = child.pid
    try:
        os.kill(first, signal.SIGKILL)

        def restarted():
            sup.poll()
            return child.restarts == 1 and child.proc.poll() is None

        assert _wait(restarted), "child was not restarted"
        assert child.pid != first
        assert child.backoff == 2.0  # doubled for the next failure
        stats = json.loads((sup.settings.run_dir / "supervisor.json").read_text())
        assert stats["components"]["sleeper"]["restarts"] == 1
        assert stats["components"]["mqtt-broker"]["state"] == "external"
    finally:
        sup.stop()
    assert child.proc.poll() is not None and child.state == "down"


def test_admin_token_generated_once_and_kept(tmp_path):
    a = _sup(tmp_path)
    b = _sup(tmp_path)
    assert a.settings.admin_token and a.settings.admin_token == b.settings.admin_token
    assert oct((a.settings.data_dir / "admin_token").stat().st_mode & 0o777) == "0o600"


def test_taken_http_port_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free(port)
        with pytest.raises(ComponentStartError, match=f"port {port} .* is taken"):
            _sup_port(tmp_path, port)


def _sup_port(tmp_path, port):
    from citybrain.settings import Settings

    return Supervisor(Settings().replace(data_dir=tmp_path / "d", mqtt_url="mqtt://x:1", kafka_bootstrap="x:1",
                                         http_port=port, simulate=False))


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "file").write_text("x")
    with pytest.raises(ComponentStartError, match="not writable"):
        _sup_port(ro / "file", 1)  # a path below a regular file can never be created


def test_missing_binary_is_a_clear_error(tmp_path):
    sup = _sup(tmp_path)
    with pytest.raises(ComponentStartError, match="cannot start"):
        sup._spawn(Child("ghost", ["/nonexistent/binary"]))


def test_child_dying_during_start_reports_its_log(tmp_path):
    sup = _sup(tmp_path)
    with pytest.raises(ComponentStartError, match="boom"):
        sup._start_blocking(Child("crasher", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], port=1),
                            timeout_s=10)


def test_several_ingest_processes_need_an_mqtt5_broker(tmp_path):
    from citybrain.settings import Settings
    from tests.conftest import free_port

    s = Settings().replace(data_dir=tmp_path / "d", kafka_bootstrap="127.0.0.1:1", http_port=free_port(),
                           simulate=False, ingest_processes=2)
    with pytest.raises(ComponentStartError, match="shared subscriptions"):
        Supervisor(s)  # the embedded broker speaks MQTT 3.1.1
    sup = Supervisor(s.replace(mqtt_url="mqtt://127.0.0.1:1"))
    sup._plan()
    ingest = [c for c in sup.children if c.role == "ingest"]
    assert [c.name for c in ingest] == ["ingest", "ingest-2"]
    assert ingest[1].env == {"CITYBRAIN_INGEST_NAME": "ingest-2", "CITYBRAIN_INGEST_CLIENT_ID": "citybrain-ingest-1-2"}
