"""The screen in a real browser (dash_duo, headless chromium): login, drill-down, health, the wall.

Set ``CITYBRAIN_SCREENSHOTS=docs/screenshots`` to (re)write the committed 1920x1080 screenshots.
The live-incident, dispatch and role tests with the real incident service are in
tests/test_dashboard_live.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.action_chains import ActionChains

from citybrain import health
from citybrain.settings import Settings
from dashboard.server import create_app

os.environ.setdefault("DASH_TEST_CHROMEPATH", "/usr/bin/chromium")
pytestmark = pytest.mark.browser

ADMIN = "boot-admin-token"


def shoot(dash_duo, name: str) -> None:
    """Save a 1920x1080 screenshot when CITYBRAIN_SCREENSHOTS names a directory."""
    out = os.environ.get("CITYBRAIN_SCREENSHOTS")
    if out:
        time.sleep(1.0)  # let plotly finish drawing
        Path(out).mkdir(parents=True, exist_ok=True)
        dash_duo.driver.save_screenshot(str(Path(out) / f"{name}.png"))


def login(dash_duo, user: str, password: str, path: str = "/") -> None:
    d = dash_duo.driver
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": False})
    d.get(f"{dash_duo.server.url}/login?next={path}")
    dash_duo.wait_for_element("#username").send_keys(user)
    d.find_element("css selector", "#password").send_keys(password)
    d.find_element("css selector", "#login-button").click()
    dash_duo.wait_for_element("#react-entry-point")


def click(dash_duo, selector: str, index: int = 0, timeout: float = 8) -> None:
    """Click the index-th element matching selector, again if the live screen re-rendered it.

    The queue and the map re-render on every tick, so an element found a moment ago can be gone
    (StaleElementReferenceException) by the time it is clicked; a person would simply click again.
    """
    until = time.monotonic() + timeout
    while True:
        try:
            dash_duo.wait_for_element(selector, timeout=timeout)
            dash_duo.find_elements(selector)[index].click()
            return
        except (StaleElementReferenceException, IndexError):
            if time.monotonic() > until:
                raise
            time.sleep(0.1)


def click_until_text(dash_duo, selector: str, target: str, text: str, timeout: float = 15) -> None:
    """Click ``selector`` until ``target`` shows ``text``: a click that lands while the live list
    re-renders reaches the replaced element and does nothing, and a person would click again."""
    until = time.monotonic() + timeout
    while True:
        click(dash_duo, selector)
        try:
            dash_duo.wait_for_contains_text(target, text, timeout=3)
            return
        except TimeoutException:
            if time.monotonic() > until:
                raise


def wait_text(dash_duo, selector: str, text: str, timeout: float = 8) -> None:
    dash_duo.wait_for_contains_text(selector, text, timeout=timeout)


@pytest.fixture
def screen_settings(tmp_path):
    return Settings().replace(data_dir=tmp_path / "data", admin_token=ADMIN)


def test_drill_down_city_to_grid_and_back(dash_duo, screen_settings, demo_city):
    app = create_app(screen_settings, demo_city)
    dash_duo.start_server(app, navigate=False)  # the login page comes first
    login(dash_duo, "admin", ADMIN)
    wait_text(dash_duo, "#crumbs", demo_city.name)
    district = sorted(demo_city.children(None))[0]
    chain = [district]
    while demo_city.children(chain[-1]):
        chain.append(sorted(demo_city.children(chain[-1]))[0])
    assert [demo_city.areas[a].level for a in chain] == ["district", "street", "community", "grid"]
    for area in chain:
        click_until_text(dash_duo, f'[id*="{area}"][id*="child"]', "#crumbs", demo_city.areas[area].name)
        # the map now shows this area: its label trace lists the area's children
        labels = dash_duo.driver.execute_script(
            "const g = document.querySelector('#map .js-plotly-plot'); return g && g.data[10].customdata;")
        assert labels == list(demo_city.children(area)), area
    wait_text(dash_duo, "#children", "finest level")
    crumbs = dash_duo.find_elements("#crumbs .crumb")
    assert len(crumbs) == 5  # city > district > street > community > grid
    click(dash_duo, "#crumbs .crumb")
    dash_duo.wait_for_element_by_id("crumbs")
    until = time.time() + 8
    while len(dash_duo.find_elements("#crumbs .crumb")) != 1 and time.time() < until:
        time.sleep(0.1)
    assert len(dash_duo.find_elements("#crumbs .crumb")) == 1
    # clicking an area's label on the map drills into it too
    labels = dash_duo.driver.execute_script(
        "const g = document.querySelector('#map .js-plotly-plot'); return g && g.data[10].customdata;")
    target = labels.index(district)
    until = time.time() + 8
    while time.time() < until:  # plotly redraws the city: click the label's point once it is there
        traces = [t for t in dash_duo.find_elements("#map .scatterlayer .trace")
                  if t.find_elements("css selector", ".textpoint")]  # the labels: the only trace with text
        points = traces[-1].find_elements("css selector", ".point") if traces else []
        if len(points) == len(labels):
            # plotly picks the point under the pointer on hover, then reports the click
            ActionChains(dash_duo.driver).move_to_element(points[target]).pause(0.3).click().perform()
            break
        time.sleep(0.1)
    wait_text(dash_duo, "#crumbs", demo_city.areas[district].name)
    assert dash_duo.get_logs() == []


def write_stats(run) -> None:
    """Stats files as a running system leaves them: alerts restarting, a few kinds of rejects."""
    health.write_stats(run, "supervisor", {"components": {n: {"state": "up"} for n in
                                                          ("mqtt-broker", "kafka-broker", "ingest", "streams")}
                                           | {"alerts": {"state": "restarting"}}})
    health.write_stats(run, "ingest", {
        "state": "up", "accepted": 182_340, "rejected": 57, "rate": 312.4,
        "rejected_by_reason": {"bad_json": 21, "unknown_device": 17, "nan_value": 9, "too_far_future": 6, "oversize": 4},
        "recent_rejects": [{"t": time.time() - k, "topic": f"city/sensors/wl-{k:04d}", "reason": r,
                            "detail": f"{r.replace('_', ' ')} in message {k}", "payload": '{"v": NaN}'}
                           for k, r in enumerate(["nan_value", "bad_json", "unknown_device"] * 3)]})
    health.write_stats(run, "streams", {"state": "up", "lag": 1234, "readings": 180_000, "warnings": 12, "late": 3,
                                        "duplicates": 40})


def test_health_view_shows_components_rejects_and_lag(dash_duo, screen_settings, demo_city):
    write_stats(screen_settings.run_dir)
    app = create_app(screen_settings, demo_city)
    dash_duo.start_server(app, navigate=False)  # the login page comes first
    login(dash_duo, "admin", ADMIN, "/health")
    wait_text(dash_duo, "#components", "alerts")
    # read in one script: the view refreshes every second, so elements found first can be
    # replaced before their text is asked for (a stale element, seen in CI on 2026-12-04)
    down = dash_duo.driver.execute_script(
        "return [...document.querySelectorAll('#components .comp.down')].map("
        "e => [e.querySelector('span:nth-child(2)').textContent, e.querySelector('.why').textContent]);")
    assert [name for name, _ in down] == ["alerts"]
    assert "restarting" in down[0][1]  # and why it is down
    wait_text(dash_duo, "#flow", "1,234 records")
    wait_text(dash_duo, "#recent-rejects", "unknown_device")
    bars = dash_duo.driver.execute_script(
        "const g = document.querySelector('#rejects-chart .js-plotly-plot'); return g && g.data[0].y;")
    assert bars[-1] == "bad_json" and len(bars) == 5


def test_wall_rotates_city_worst_district_incidents_without_controls(dash_duo, screen_settings, demo_city):
    app = create_app(screen_settings, demo_city, wall_rotate_s=2.0)
    dash_duo.start_server(app, navigate=False)  # the login page comes first
    login(dash_duo, "admin", ADMIN, "/wall")
    seen: dict[str, str] = {}
    deadline = time.time() + 15
    while len(seen) < 3 and time.time() < deadline:
        got = dash_duo.driver.execute_script(
            "const e = document.getElementById('wall-view'); return e && [e.dataset.phase, e.textContent];")
        if got:
            seen.setdefault(*got)
        time.sleep(0.2)
    assert set(seen) == {"0", "1", "2"}, seen
    assert seen["0"].startswith("City") and seen["1"].startswith("Worst district") and seen["2"].startswith("Incidents")
    # no controls on the wall: no buttons, inputs, dropdowns or links to click
    assert dash_duo.find_elements("#page button, #page input, #page a, #page .Select") == []


def test_admin_adds_a_user_and_issues_a_token_that_works(dash_duo, screen_settings, demo_city):
    import requests

    app = create_app(screen_settings, demo_city)
    app.citybrain_auth.add_user("vera", "viewer-pass", "viewer")
    dash_duo.start_server(app, navigate=False)
    login(dash_duo, "admin", ADMIN, "/admin")
    dash_duo.wait_for_element("#new-user").send_keys("olga")
    dash_duo.find_element("#new-pass").send_keys("operator-pass")
    dash_duo.find_element("#add-user").click()
    wait_text(dash_duo, "#admin-msg", "user olga (operator) added")
    wait_text(dash_duo, "#users", "olga")
    dash_duo.find_element("#tok-name").send_keys("ops-script")
    dash_duo.find_element("#issue-token").click()
    token = dash_duo.wait_for_element("#new-token").text
    r = requests.get(dash_duo.server.url + "/api/health", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200
    assert app.citybrain_auth.login("olga", "operator-pass").role == "operator"
    # a viewer gets no administration
    dash_duo.driver.delete_all_cookies()
    login(dash_duo, "vera", "viewer-pass", "/admin")
    wait_text(dash_duo, "#page", "Administration is for admins")
    assert "Administration" not in dash_duo.find_element(".topbar nav").text
