"""The incident endpoints of the HTTP API with the real incident service: listing, detail, CAP,
actions with their errors (404, 409), units, performance. On a real socket."""

from __future__ import annotations

import time

import pytest
import requests
import xmlschema

from citybrain.city import load_city
from citybrain.records import Evidence, Incident, Warning
from citybrain.settings import BUNDLED_CITY, Settings
from dashboard.server import BackgroundServer, create_app
from tests.conftest import SHARED

api = pytest.importorskip("alerts.api", reason="the incident service facade (alerts.api) is not there yet")

ADMIN = "boot-admin-token"
CONTRACT_FIELDS = {"id", "event", "category", "severity", "state", "area", "district", "location", "started_at",
                   "detected_at", "evidence", "units", "history"}


@pytest.fixture(scope="module")
def city():
    return load_city(BUNDLED_CITY)


@pytest.fixture
def srv(tmp_path, city):
    settings = Settings().replace(data_dir=tmp_path / "data", admin_token=ADMIN)
    service = api.IncidentService(settings, city)
    app = create_app(settings, city, service)
    _, op = app.citybrain_auth.issue_token("olga", "operator")
    _, viewer = app.citybrain_auth.issue_token("wall", "viewer")
    with BackgroundServer(app) as s:
        s.service, s.city, s.op, s.viewer = service, city, op, viewer
        yield s


def call(srv, method, path, token, **kw):
    return requests.request(method, srv.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw)


def raise_incident(srv, wid="w-api-1") -> str:
    dev = next(d for d in srv.city.sensors() if d.kind == "smoke")
    t = time.time()
    srv.service.handle_warning(Warning(
        id=wid, event="fire", grid=dev.area, district=dev.district, location=dev.location, t=t, started_at=t - 120,
        score=0.8, severity="Severe", certainty="Likely", urgency="Immediate", detector="threshold",
        explanation="smoke above the alarm limit", evidence=(Evidence(dev.id, "smoke", t - 60, 420.0),)))
    return next(i.id for i in srv.service.list_incidents("open") if wid in i.warnings or i.area == dev.area)


def test_list_get_and_cap(srv):
    assert call(srv, "GET", "/api/incidents", srv.viewer).json() == []
    inc_id = raise_incident(srv)
    listed = call(srv, "GET", "/api/incidents?state=open", srv.viewer).json()
    assert [i["id"] for i in listed] == [inc_id]
    assert CONTRACT_FIELDS <= set(listed[0])
    assert Incident.from_dict(listed[0]).id == inc_id
    one = call(srv, "GET", f"/api/incidents/{inc_id}", srv.viewer)
    assert one.status_code == 200 and one.json()["event"] == "fire"
    assert call(srv, "GET", "/api/incidents/NO-SUCH", srv.viewer).status_code == 404
    cap = call(srv, "GET", f"/api/incidents/{inc_id}/cap", srv.viewer)
    assert cap.status_code == 200 and cap.headers["Content-Type"].startswith("application/xml")
    xmlschema.XMLSchema(SHARED / "standards" / "cap" / "CAP-v1.2.xsd").validate(cap.text)
    assert call(srv, "GET", "/api/incidents/NO-SUCH/cap", srv.viewer).status_code == 404


def test_actions_are_audited_with_the_token_holder_and_illegal_ones_are_409(srv):
    inc_id = raise_incident(srv)
    r = call(srv, "POST", f"/api/incidents/{inc_id}/actions", srv.op, json={"action": "acknowledge", "note": "on it"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "acknowledged"
    assert any(h["actor"] == "olga" and h["note"] == "on it" for h in body["history"])
    unit = next(u for u in srv.city.units.values() if u.type == "fire").id
    r = call(srv, "POST", f"/api/incidents/{inc_id}/actions", srv.op, json={"action": "dispatch", "unit": unit})
    assert r.status_code == 200, r.text
    assert unit in r.json()["units"]
    r = call(srv, "POST", f"/api/incidents/{inc_id}/actions", srv.op, json={"action": "false_alarm"})
    assert r.status_code == 200 and r.json()["state"] == "false_alarm"
    r = call(srv, "POST", f"/api/incidents/{inc_id}/actions", srv.op, json={"action": "acknowledge"})
    assert r.status_code == 409 and r.json()["error"]
    assert call(srv, "GET", "/api/incidents?state=open", srv.viewer).json() == []
    assert [i["id"] for i in call(srv, "GET", "/api/incidents?state=all", srv.viewer).json()] == [inc_id]
    r = call(srv, "POST", "/api/incidents/NO-SUCH/actions", srv.op, json={"action": "acknowledge"})
    assert r.status_code == 404
    r = call(srv, "POST", f"/api/incidents/{inc_id}/actions", srv.viewer, json={"action": "acknowledge"})
    assert r.status_code == 403


def test_units_performance_and_kpis(srv):
    units = call(srv, "GET", "/api/units", srv.viewer).json()
    assert {u["id"] for u in units} == set(srv.city.units)
    assert {"id", "type", "state"} <= set(units[0])
    assert call(srv, "GET", "/api/performance", srv.viewer).status_code == 200
    raise_incident(srv)
    time.sleep(0.5)  # past the snapshot cache
    k = call(srv, "GET", "/api/kpis", srv.viewer).json()
    assert k["open"] == 1 and k["open_by_severity"]["Severe"] == 1
    assert k["units_available"] + k["units_busy"] <= k["units_total"] == len(srv.city.units)
    district = call(srv, "GET", "/api/risk?level=district", srv.viewer).json()
    assert max(district.values()) > 50 and set(district) == {a.id for a in srv.city.by_level("district")}


def test_silences_are_for_admins_and_validated(srv):
    until = time.time() + 3600
    r = call(srv, "POST", "/api/silences", srv.op, json={"scope": "event", "value": "fire", "until": until})
    assert r.status_code == 403
    for body, msg in (({"scope": "event", "value": "fire"}, "missing field(s): until"),
                      ({"scope": "event", "value": "fire", "until": until, "forever": True}, "unknown field"),
                      ({"scope": "planet", "value": "fire", "until": until}, "scope must be one of"),
                      ({"scope": "event", "value": "fire", "until": None}, "until must be a finite number")):
        r = call(srv, "POST", "/api/silences", ADMIN, json=body)
        assert r.status_code == 400 and msg in r.json()["error"], (body, r.text)
    r = call(srv, "POST", "/api/silences", ADMIN, json={"scope": "event", "value": "fire", "until": until,
                                                         "note": "drill at the fire station"})
    assert r.status_code == 201
    sid = r.json()["id"]
    assert [s["id"] for s in call(srv, "GET", "/api/silences", srv.viewer).json()] == [sid]
    assert raise_incident_or_none(srv) is None  # a silenced fire raises nothing
    assert call(srv, "DELETE", f"/api/silences/{sid}", ADMIN).status_code == 200
    assert call(srv, "DELETE", f"/api/silences/{sid}", ADMIN).status_code == 404
    assert call(srv, "GET", "/api/silences", srv.viewer).json() == []


def raise_incident_or_none(srv):
    try:
        return raise_incident(srv, "w-silenced")
    except StopIteration:
        return None
