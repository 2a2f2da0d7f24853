"""The HTTP API (CONTRACT section 3): authentication, roles, validation, health, administration.

Served on a real socket; the incident endpoints with the real incident service are in
tests/test_api_incidents.py.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from citybrain import health
from citybrain.city import load_city
from citybrain.settings import BUNDLED_CITY, Settings
from dashboard.server import BackgroundServer, create_app

ADMIN = "boot-admin-token"


@pytest.fixture
def api(tmp_path):
    settings = Settings().replace(data_dir=tmp_path / "data", admin_token=ADMIN)
    app = create_app(settings, load_city(BUNDLED_CITY), service=None)
    with BackgroundServer(app) as srv:
        srv.settings = settings
        yield srv


def call(srv, method: str, path: str, token: str | None = ADMIN, **kw) -> requests.Response:
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, srv.url + path, headers=headers, timeout=10, **kw)


def test_no_token_bad_token_and_wrong_scheme_are_401(api):
    for token, extra in ((None, {}), ("not-a-token", {}), (None, {"Authorization": f"Basic {ADMIN}"})):
        r = call(api, "GET", "/api/incidents", token, headers=dict(extra))
        assert r.status_code == 401
        assert r.headers["Content-Type"].startswith("application/json") and r.json()["error"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # no state change without authentication either
    assert call(api, "POST", "/api/incidents/X/actions", None, json={"action": "acknowledge"}).status_code == 401


def test_roles_via_issued_tokens(api):
    viewer = call(api, "POST", "/api/tokens", json={"name": "wall-screen", "role": "viewer"})
    assert viewer.status_code == 201
    vt = viewer.json()["token"]
    assert call(api, "GET", "/api/health", vt).status_code == 200
    r = call(api, "POST", "/api/incidents/INC-1/actions", vt, json={"action": "acknowledge"})
    assert r.status_code == 403 and "operator" in r.json()["error"]
    assert call(api, "GET", "/api/users", vt).status_code == 403
    assert call(api, "POST", "/api/tokens", vt, json={"name": "x", "role": "admin"}).status_code == 403
    listed = call(api, "GET", "/api/tokens").json()
    assert [t["name"] for t in listed] == ["wall-screen"] and "token" not in listed[0]
    assert call(api, "DELETE", f"/api/tokens/{listed[0]['id']}").status_code == 200
    assert call(api, "GET", "/api/health", vt).status_code == 401  # revoked
    assert call(api, "DELETE", "/api/tokens/nope").status_code == 404


def test_user_management(api):
    r = call(api, "POST", "/api/users", json={"name": "olga", "password": "operator-pass", "role": "operator"})
    assert r.status_code == 201 and r.json() == {"name": "olga", "role": "operator"}
    assert [u["name"] for u in call(api, "GET", "/api/users").json()] == ["olga"]
    for body, msg in (({"name": "olga", "password": "x", "role": "operator"}, "at least 8"),
                      ({"name": "olga", "password": "operator-pass", "role": "root"}, "role must be one of"),
                      ({"name": "olga", "password": "operator-pass", "role": "viewer", "admin": True}, "unknown field"),
                      ([1, 2], "JSON object")):
        r = call(api, "POST", "/api/users", json=body)
        assert r.status_code == 400 and msg in r.json()["error"]
    r = call(api, "POST", "/api/users", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert call(api, "DELETE", "/api/users/olga").status_code == 200
    assert call(api, "DELETE", "/api/users/olga").status_code == 404


def test_action_input_is_validated_with_specific_messages(api):
    cases = [
        ({"action": "explode"}, "action must be one of"),
        ({}, "action must be one of"),
        ({"action": "dispatch", "unit": 7}, "unit must be a unit id string"),
        ({"action": "dispatch", "unit": "NO-SUCH-UNIT"}, "unknown unit"),
        ({"action": "acknowledge", "unit": "FIRE-01"}, "only meaningful with action 'dispatch'"),
        ({"action": "acknowledge", "note": "x" * 3000}, "at most 2000"),
        ({"action": "acknowledge", "note": 5}, "note must be a string"),
        ({"action": "acknowledge", "actor": "someone-else"}, "unknown field"),
    ]
    for body, msg in cases:
        r = call(api, "POST", "/api/incidents/INC-1/actions", json=body)
        assert r.status_code == 400, body
        assert msg in r.json()["error"], (body, r.json())


def test_without_incident_service_the_api_says_503(api):
    r = call(api, "GET", "/api/incidents")
    assert r.status_code == 503 and "incident service" in r.json()["error"]
    assert call(api, "GET", "/api/nothing-here").status_code == 404
    assert call(api, "GET", "/api/incidents?state=closed").status_code == 400


def test_health_from_the_stats_files(api):
    run = api.settings.run_dir
    health.write_stats(run, "supervisor", {"components": {
        "ingest": {"state": "up"}, "streams": {"state": "up"}, "alerts": {"state": "restarting"},
        "mqtt-broker": {"state": "external"}}})
    health.write_stats(run, "ingest", {"state": "up", "accepted": 1200, "rejected": 7, "rate": 42.5,
                                       "rejected_by_reason": {"bad_json": 4, "nan_value": 3},
                                       "recent_rejects": [{"t": time.time(), "topic": "city/sensors/x",
                                                           "reason": "bad_json", "detail": "x", "payload": "{"}]})
    health.write_stats(run, "streams", {"state": "up", "lag": 17, "readings": 1100})
    health.write_stats(run, "timeseries", {"state": "degraded", "store_error": "influxdb at http://tsdb:8086 refused"})
    stale = run / "alerts.json"  # a heartbeat that stopped a minute ago
    stale.write_text(json.dumps({"name": "alerts", "state": "up", "t": time.time() - 60}))
    h = call(api, "GET", "/api/health").json()
    assert h["components"] == {"alerts": "down", "dashboard": "up", "ingest": "up", "mqtt-broker": "up",
                               "streams": "up", "timeseries": "down"}
    # and why: what a degraded component says, or how long its heartbeat has been silent
    assert h["problems"]["timeseries"] == "influxdb at http://tsdb:8086 refused"
    assert h["problems"]["alerts"].startswith("no heartbeat for 6") and set(h["problems"]) == {"alerts", "timeseries"}
    assert (h["ingest_rate"], h["lag"], h["accepted"], h["rejected"]) == (42.5, 17, 1200, 7)
    assert h["rejected_by_reason"] == {"bad_json": 4, "nan_value": 3}
    assert h["recent_rejects"][0]["reason"] == "bad_json"
    k = call(api, "GET", "/api/kpis").json()
    assert k["ingest_rate"] == 42.5 and k["lag"] == 17 and k["components_down"] == ["alerts", "timeseries"]
    assert k["open"] == 0 and k["devices_online_pct"] == 100.0
