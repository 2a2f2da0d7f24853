"""Users, tokens and the screen's login, over a real socket."""

from __future__ import annotations

import sqlite3
import time

import pytest
import requests

from citybrain.city import load_city
from citybrain.settings import BUNDLED_CITY, Settings
from dashboard.auth import AuthStore, BadInput
from dashboard.server import BackgroundServer, create_app


def test_passwords_and_tokens_are_stored_hashed(tmp_path):
    db = tmp_path / "auth.db"
    store = AuthStore(db, admin_token="boot-token")
    store.add_user("olga", "correct horse", "operator")
    tid, token = store.issue_token("ci-bot", "viewer")
    assert store.login("olga", "correct horse").role == "operator"
    assert store.login("olga", "wrong password") is None
    assert store.login("nobody", "correct horse") is None
    assert store.by_token(token).name == "ci-bot"
    assert store.by_token(token + "x") is None
    assert store.by_token("boot-token").role == "admin"
    assert store.login("admin", "boot-token").role == "admin"  # bootstrap login
    raw = b"".join(str(row).encode() for t in ("users", "tokens") for row in
                   sqlite3.connect(db).execute(f"SELECT * FROM {t}"))  # noqa: S608 - fixed names
    assert b"correct horse" not in raw and token.encode() not in raw
    store.revoke_token(tid)
    assert store.by_token(token) is None
    with pytest.raises(BadInput, match="at least 8"):
        store.add_user("bob", "short", "viewer")
    with pytest.raises(BadInput, match="role must be one of"):
        store.add_user("bob", "long enough", "superuser")
    with pytest.raises(BadInput, match="name must be"):
        store.add_user("bob smith", "long enough", "viewer")
    store.close()


def test_session_secret_survives_restarts(tmp_path):
    a = AuthStore(tmp_path / "a.db")
    s = a.session_secret()
    a.close()
    assert AuthStore(tmp_path / "a.db").session_secret() == s


@pytest.fixture
def screen(tmp_path):
    settings = Settings().replace(data_dir=tmp_path / "data", admin_token="boot-token")
    app = create_app(settings, load_city(BUNDLED_CITY), service=None)
    app.citybrain_auth.add_user("vera", "viewer-pass", "viewer")
    with BackgroundServer(app) as srv:
        srv.auth = app.citybrain_auth
        yield srv


def test_screen_needs_login_and_sets_a_strict_cookie(screen):
    r = requests.get(screen.url + "/", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    assert requests.post(screen.url + "/_dash-update-component", json={}, timeout=10).status_code == 401
    s = requests.Session()
    bad = s.post(screen.url + "/login", data={"username": "vera", "password": "nope"}, timeout=10)
    assert bad.status_code == 401 and "Wrong user name or password" in bad.text
    ok = s.post(screen.url + "/login", data={"username": "vera", "password": "viewer-pass", "next": "/health"},
                allow_redirects=False, timeout=10)
    assert ok.status_code == 302 and ok.headers["Location"] == "/health"
    cookie = ok.headers["Set-Cookie"]
    assert "SameSite=Strict" in cookie and "HttpOnly" in cookie
    assert s.get(screen.url + "/", timeout=10).status_code == 200
    layout = s.get(screen.url + "/_dash-layout", timeout=10)
    assert layout.status_code == 200
    # a callback POST from another site is refused even with the cookie
    forged = s.post(screen.url + "/_dash-update-component", json={}, headers={"Origin": "http://evil.example"},
                    timeout=10)
    assert forged.status_code == 403
    s.post(screen.url + "/logout", timeout=10)
    assert s.get(screen.url + "/", allow_redirects=False, timeout=10).status_code == 302


def test_removing_a_user_ends_their_session(screen, tmp_path):
    s = requests.Session()
    s.post(screen.url + "/login", data={"username": "vera", "password": "viewer-pass"}, timeout=10)
    assert s.get(screen.url + "/", allow_redirects=False, timeout=10).status_code == 200
    screen.auth.remove_user("vera")
    assert s.get(screen.url + "/", allow_redirects=False, timeout=10).status_code == 302


def test_open_redirect_after_login_is_refused(screen):
    s = requests.Session()
    r = s.post(screen.url + "/login", data={"username": "admin", "password": "boot-token",
                                            "next": "//evil.example/x"}, allow_redirects=False, timeout=10)
    assert r.headers["Location"] == "/"


def test_heartbeat_file(tmp_path):
    from citybrain import health
    from dashboard.server import Heartbeat

    settings = Settings().replace(data_dir=tmp_path / "data")
    app = create_app(settings, load_city(BUNDLED_CITY))
    beat = Heartbeat(settings, app, period_s=0.05)
    beat.start()
    try:
        deadline = time.time() + 5
        while "dashboard" not in health.read_all(settings.run_dir) and time.time() < deadline:
            time.sleep(0.05)
        st = health.read_all(settings.run_dir)["dashboard"]
        assert st["state"] == "up" and health.is_up(st)
    finally:
        beat.stop_event.set()
        beat.join(2)
