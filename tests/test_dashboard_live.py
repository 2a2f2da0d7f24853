"""The screen with the real incident service: an incident appears live, an operator dispatches a
unit from the detail panel and the unit receives CAP over MQTT, a viewer cannot act.

The incident is raised by a second ``IncidentService`` on the same store, as the alerts process
does, so the test sees what an operator sees: the screen noticing a change it did not make.
"""

from __future__ import annotations

import os
import queue
import time

import paho.mqtt.client as paho
import pytest
import requests

from citybrain.records import Evidence, UnitStatus, Warning
from citybrain.vocab import severity_from_score
from dashboard import figures, risk
from dashboard.callbacks import callback_request
from dashboard.publisher import MqttPublisher
from dashboard.server import create_app
from tests.test_dashboard_browser import click, click_until_text, login, shoot, write_stats

api = pytest.importorskip("alerts.api", reason="the incident service facade (alerts.api) is not there yet")
os.environ.setdefault("DASH_TEST_CHROMEPATH", "/usr/bin/chromium")
pytestmark = pytest.mark.browser

ADMIN = "boot-admin-token"
CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"


def flood_warning(city, t: float, wid: str = "w-flood-1") -> Warning:
    dev = next(d for d in city.sensors() if d.kind == "water_level")
    grid = city.areas[dev.area]
    return Warning(id=wid, event="flood", grid=grid.id, district=dev.district, location=dev.location, t=t,
                   started_at=t - 300, score=0.92, severity="Extreme", certainty="Observed", urgency="Immediate",
                   detector="threshold", explanation="water level above the alarm limit",
                   evidence=tuple(Evidence(dev.id, "water_level", t - 300 + 60 * k, 3.2 + 0.4 * k) for k in range(6)))


@pytest.fixture
def live(settings, demo_city, mosquitto):
    """The screen with a dispatching facade, a raiser (the alerts process) and an MQTT listener."""
    s = settings.replace(admin_token=ADMIN)
    pub = MqttPublisher(s)
    screen_service = api.IncidentService(s, demo_city, publisher=pub)
    raiser = api.IncidentService(s, demo_city)
    got: queue.Queue = queue.Queue()
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"listener-{os.getpid()}", protocol=paho.MQTTv5)
    sub.on_connect = lambda c, *_: c.subscribe("city/units/+/dispatch", qos=1)
    sub.on_message = lambda c, u, m: got.put((m.topic, m.payload.decode()))
    sub.connect(*mosquitto)
    sub.loop_start()
    app = create_app(s, demo_city, screen_service, wall_rotate_s=4.0)
    app.citybrain_auth.add_user("olga", "operator-pass", "operator")
    app.citybrain_auth.add_user("vera", "viewer-pass", "viewer")
    yield app, raiser, screen_service, got
    sub.loop_stop()
    sub.disconnect()
    pub.close()


def raise_and_wait(dash_duo, raiser, city) -> tuple[str, float]:
    """Raise an incident as the alerts process would; (its id, seconds until the browser showed it).

    The browser itself notes when the queue first shows it (a MutationObserver), so the figure is
    the screen's latency, not the test's polling interval.
    """
    dash_duo.wait_for_contains_text("#queue", "No open incidents", timeout=8)
    dash_duo.wait_for_element("#map .main-svg", timeout=10)  # plotly loaded: a screen that has been up a while
    time.sleep(0.5)
    dash_duo.driver.execute_script("""
        window.seenAt = null;
        const q = document.getElementById('queue');
        new MutationObserver(() => { if (!window.seenAt && q.querySelector('.qitem')) window.seenAt = Date.now(); })
            .observe(q, {childList: true, subtree: true, characterData: true});""")
    raiser.handle_warning(flood_warning(city, time.time()))
    raised = time.time()
    inc = raiser.list_incidents("open")[0]
    dash_duo.wait_for_contains_text("#queue", inc.id, timeout=5)
    return inc.id, dash_duo.driver.execute_script("return window.seenAt;") / 1000.0 - raised


def test_incident_appears_live_and_dispatch_sends_cap_to_the_unit(dash_duo, live, demo_city):
    app, raiser, service, got = live
    dash_duo.start_server(app, navigate=False)
    login(dash_duo, "olga", "operator-pass")
    inc_id, seconds = raise_and_wait(dash_duo, raiser, demo_city)
    assert seconds < 1.0, f"the incident took {seconds:.2f} s to appear"
    dash_duo.wait_for_contains_text("#kpis", "1 Extreme", timeout=4)
    click_until_text(dash_duo, ".qitem", "#detail-id", inc_id)
    dash_duo.select_dcc_dropdown("#act-unit", index=0)  # the best suggested unit
    dash_duo.find_element("#act-note").send_keys("sending the nearest rescue team")
    click(dash_duo, "#act-dispatch")
    dash_duo.wait_for_contains_text("#act-msg", "dispatch", timeout=5)
    assert "✓" in dash_duo.find_element("#act-msg").text, dash_duo.find_element("#act-msg").text
    topic, cap = got.get(timeout=10)
    unit = topic.split("/")[2]
    assert topic == f"city/units/{unit}/dispatch" and unit in demo_city.units
    assert CAP_NS in cap and "<alert" in cap and inc_id in cap
    inc = service.get(inc_id)
    assert unit in inc.units
    h = [e for e in inc.history if e.actor == "olga"]
    assert h and h[-1].note == "sending the nearest rescue team"
    dash_duo.wait_for_contains_text("#detail", "olga", timeout=5)  # the timeline shows who did it
    # the unit reports it is on scene: the map shows its new state without a reload
    loc = inc.location
    raiser.handle_unit_status(UnitStatus(unit=unit, state="on_scene", incident=inc_id, location=loc, t=time.time()))
    raised = time.monotonic()
    js = ("const g = document.querySelector('#map .js-plotly-plot'); const t = g && g.data[%d];"
          "const i = t ? t.customdata.indexOf('%s') : -1; return i < 0 ? null : t.marker.color[i];")
    until = raised + 5
    while time.monotonic() < until and dash_duo.driver.execute_script(js % (figures.T_UNITS, unit)) != \
            figures.UNIT_COLOUR["on_scene"]:
        time.sleep(0.05)
    assert dash_duo.driver.execute_script(js % (figures.T_UNITS, unit)) == figures.UNIT_COLOUR["on_scene"]
    assert time.monotonic() - raised < 1.5


def test_a_viewer_sees_but_cannot_dispatch(dash_duo, live, demo_city):
    app, raiser, service, got = live
    dash_duo.start_server(app, navigate=False)
    login(dash_duo, "vera", "viewer-pass")
    inc_id, _ = raise_and_wait(dash_duo, raiser, demo_city)
    click_until_text(dash_duo, ".qitem", "#detail-id", inc_id)
    for action in ("acknowledge", "dispatch", "resolve", "close", "false_alarm"):
        assert not dash_duo.find_element(f"#act-{action}").is_enabled()
    assert "read-only" in dash_duo.find_element("#act-msg").text
    # a disabled button is only a courtesy: the viewer's own session posting the dispatch callback
    # by hand (as a crafted request would) is refused by the server
    unit = next(iter(demo_city.units))
    cookie = dash_duo.driver.get_cookie("citybrain_session")["value"]
    s = requests.Session()
    s.cookies.set("citybrain_session", cookie)
    deps = s.get(dash_duo.server.url + "/_dash-dependencies", timeout=10).json()
    body = callback_request(deps, "act-msg.children", {"act-dispatch.n_clicks": 1, "selected.data": inc_id,
                                                       "act-unit.value": unit, "act-note.value": "sneaky"},
                            "act-dispatch.n_clicks")
    r = s.post(dash_duo.server.url + "/_dash-update-component", json=body, timeout=10)
    assert r.status_code == 200 and "may not" in r.json()["response"]["act-msg"]["children"]
    assert service.get(inc_id).state == "new" and not service.get(inc_id).units
    with pytest.raises(queue.Empty):
        got.get(timeout=1.0)


def test_screenshots_of_a_busy_city(dash_duo, live, demo_city, settings):
    """Every view with a dozen incidents in several districts; also checks what the wall shows.

    With CITYBRAIN_SCREENSHOTS=docs/screenshots this writes the committed screenshots.
    """
    app, raiser, service, got = live
    write_stats(settings.run_dir)
    now = time.time()
    sensors = [d for d in demo_city.sensors() if d.limits]
    kinds = {"water_level": "flood", "smoke": "fire", "gas": "gas_leak", "pm25": "air_pollution", "noise": "noise"}
    by_kind = {k: [d for d in sensors if d.kind == k] for k in kinds}
    picked = [by_kind[k][(j * 37) % len(by_kind[k])] for j in range(3) for k in kinds if by_kind[k]][:12]
    for k, dev in enumerate(picked):
        score = (0.95, 0.75, 0.5, 0.3)[k % 4]
        raiser.handle_warning(Warning(
            id=f"w-shot-{k}", event=kinds[dev.kind], grid=dev.area, district=dev.district, location=dev.location,
            t=now - 30 * k, started_at=now - 30 * k - 240, score=score, severity=severity_from_score(score),
            certainty="Likely", urgency="Immediate", detector="threshold",
            explanation=f"{dev.kind} above its alarm limit",
            evidence=tuple(Evidence(dev.id, dev.kind, now - 30 * k - 240 + 60 * j, (dev.limit("alarm") or 1) * (0.8 + 0.1 * j))
                           for j in range(5))))
    incidents = raiser.list_incidents("open")
    assert len(incidents) >= 8
    service.act(incidents[1].id, "acknowledge", actor="olga", note="looking")
    dash_duo.start_server(app, navigate=False)
    login(dash_duo, "olga", "operator-pass")
    dash_duo.wait_for_contains_text("#queue", incidents[0].id, timeout=8)
    shoot(dash_duo, "city")
    click_until_text(dash_duo, ".qitem", "#detail-id", "INC-")
    shoot(dash_duo, "incident_detail")
    rm = app.citybrain.data.snapshot().risk
    worst = risk.worst_child(demo_city, rm, None)
    click_until_text(dash_duo, f'[id*="{worst}"][id*="child"]', "#crumbs", demo_city.areas[worst].name)
    shoot(dash_duo, "district")
    dash_duo.driver.get(dash_duo.server.url + "/health")
    dash_duo.wait_for_contains_text("#recent-rejects", "unknown_device", timeout=8)
    shoot(dash_duo, "health")
    write_stats(settings.run_dir)  # fresh heartbeats: the wall should not show stale components as down
    dash_duo.driver.get(dash_duo.server.url + "/wall")
    for phase in ("1", "2"):
        deadline = time.time() + 40
        while time.time() < deadline:
            got_phase = dash_duo.driver.execute_script(
                "const e = document.getElementById('wall-view'); return e && [e.dataset.phase, e.textContent];")
            if got_phase and got_phase[0] == phase:
                break
            write_stats(settings.run_dir)  # the components keep beating
            time.sleep(0.2)
        assert got_phase and got_phase[0] == phase
        if phase == "1":
            assert demo_city.areas[worst].name in got_phase[1]
            shoot(dash_duo, "wall_district")
        else:
            assert len(dash_duo.find_elements(".card")) == min(len(service.list_incidents("open")), 12)
            shoot(dash_duo, "wall_incidents")
