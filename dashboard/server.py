"""The command-center process: one Flask server carrying the Dash screen, the login and the API.

Why one server: the screen and the API show the same incidents from the same snapshot cache
and must be reachable on one port (CONTRACT: ``http://127.0.0.1:8050``). The screen uses a
login session (signed cookie, ``SameSite=Strict`` and ``HttpOnly``, so another site can neither
read it nor make the browser send it; Dash callbacks are JSON POSTs checked for a same-origin
``Origin``); the API uses bearer tokens only. Everything the screen serves is local
(``serve_locally``): the control room has no internet.
"""

from __future__ import annotations

import html as html_escape
import logging
import signal
import statistics
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import flask
from dash import Dash

from citybrain import health, logs
from citybrain.city import City, load_city
from citybrain.clock import Clock, WallClock
from citybrain.settings import Settings
from dashboard import callbacks, layout
from dashboard.api import create_blueprint
from dashboard.auth import AuthStore
from dashboard.data import DataSource

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
PUBLIC_PREFIXES = ("/login", "/assets/", "/_dash-component-suites/", "/_favicon.ico", "/api/", "/healthz")
SESSION_HOURS = 12


def create_app(settings: Settings, city: City, service: Any | None = None, clock: Clock | None = None,
               *, tick_ms: int = 500, wall_rotate_s: float = 15.0, auth: AuthStore | None = None) -> Dash:
    """The Dash app (its Flask server is ``app.server``). ``service``: an ``alerts.api.IncidentService``."""
    clock = clock or WallClock()
    auth = auth or AuthStore(settings.data_dir / "dashboard.db", settings.admin_token.get(), clock)
    server = flask.Flask(__name__)
    server.config.update(
        SECRET_KEY=auth.session_secret(), SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_NAME="citybrain_session", PERMANENT_SESSION_LIFETIME=SESSION_HOURS * 3600,
        JSON_SORT_KEYS=False, MAX_CONTENT_LENGTH=256 * 1024,
    )
    data = DataSource(settings, city, service, clock)
    server.register_blueprint(create_blueprint(data, auth))
    _login_routes(server, auth, city.name)
    app = Dash(__name__, server=server, serve_locally=True, assets_folder=str(ASSETS), title="City Brain",
               update_title=None, suppress_callback_exceptions=True, compress=False)
    app.layout = layout.root()
    sc = callbacks.ScreenContext(data, city, clock, tick_ms=tick_ms, wall_rotate_s=wall_rotate_s, auth=auth)
    callbacks.register(app, sc)
    threading.Thread(target=sc.geoms.get, args=(None,), name="warm-geometry", daemon=True).start()
    app.citybrain = sc  # type: ignore[attr-defined]  # for the heartbeat and the bench
    app.citybrain_auth = auth  # type: ignore[attr-defined]
    return app


def _login_routes(server: flask.Flask, auth: AuthStore, city_name: str) -> None:
    @server.before_request
    def gate() -> Any:
        path = flask.request.path
        if path.startswith(PUBLIC_PREFIXES):
            return None
        if flask.request.method == "POST" and not _same_origin():
            return flask.jsonify({"error": "cross-origin request refused"}), 403
        user = flask.session.get("user")
        if user:
            role = auth.role_of(user)
            if role is not None:
                flask.session["role"] = role
                return None
            flask.session.clear()  # the user was removed
        if path.startswith("/_dash"):
            return flask.jsonify({"error": "login required"}), 401
        return flask.redirect("/login?next=" + flask.request.full_path.rstrip("?"))

    @server.get("/healthz")
    def healthz() -> Any:
        return flask.jsonify({"status": "up"})

    @server.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        message = ""
        nxt = flask.request.values.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        if flask.request.method == "POST":
            if not _same_origin():
                return flask.jsonify({"error": "cross-origin request refused"}), 403
            p = auth.login(flask.request.form.get("username", ""), flask.request.form.get("password", ""))
            if p is not None:
                flask.session.clear()
                flask.session.permanent = True
                flask.session.update(user=p.name, role=p.role)
                return flask.redirect(nxt)
            message = "Wrong user name or password."
        return _login_page(city_name, nxt, message), 401 if message else 200

    @server.post("/logout")
    def logout() -> Any:
        flask.session.clear()
        return flask.redirect("/login")


def _same_origin() -> bool:
    """A POST's ``Origin`` (when the browser sends one) must be this server."""
    origin = flask.request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    return urlparse(origin).netloc == flask.request.host


def _login_page(city_name: str, nxt: str, message: str) -> str:
    esc = html_escape.escape
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>City Brain - sign in</title>
<link rel="stylesheet" href="/assets/citybrain.css"></head><body class="login-body">
<form class="login" method="post" action="/login">
<h1>CITY BRAIN</h1><p class="muted">{esc(city_name)} command center</p>
<input type="hidden" name="next" value="{esc(nxt)}">
<label>User <input id="username" name="username" autocomplete="username" required autofocus></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password" required></label>
<button id="login-button" type="submit">Sign in</button>
<p class="error" id="login-error">{esc(message)}</p></form></body></html>"""


class Heartbeat(threading.Thread):
    """Writes ``run/dashboard.json`` every second: up, updates served, server time per update."""

    def __init__(self, settings: Settings, app: Dash, period_s: float = 1.0) -> None:
        super().__init__(name="dashboard-heartbeat", daemon=True)
        self.settings, self.app, self.period_s = settings, app, period_s
        self.stop_event = threading.Event()

    def stats(self) -> dict[str, Any]:
        sc = self.app.citybrain  # type: ignore[attr-defined]
        ms = sorted(t * 1000 for t, _ in list(sc.timings))
        return {"state": "up", "updates": sc.updates,
                "update_ms_p50": round(statistics.median(ms), 2) if ms else None,
                "update_ms_p95": round(ms[int(len(ms) * 0.95) - 1], 2) if len(ms) >= 20 else None,
                "http": f"http://{self.settings.http_host}:{self.settings.http_port}"}

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                health.write_stats(self.settings.run_dir, "dashboard", self.stats())
            except OSError as e:
                log.warning("cannot write heartbeat: %s", e)
            self.stop_event.wait(self.period_s)


class BackgroundServer:
    """The app served from a thread on a real socket: for tests, the bench and embedding."""

    def __init__(self, app: Dash, host: str = "127.0.0.1", port: int = 0) -> None:
        from werkzeug.serving import make_server

        self.httpd = make_server(host, port, app.server, threaded=True)
        self.port = self.httpd.server_port
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard-http", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_service(settings: Settings, city: City) -> tuple[Any | None, Any | None]:
    """The incident service facade with an MQTT publisher, or (None, None) when it cannot start."""
    try:
        from alerts.api import IncidentService
    except ImportError as e:
        log.error("incident service facade unavailable (%s): the screen will show no incidents", e)
        return None, None
    from dashboard.publisher import MqttPublisher

    pub = MqttPublisher(settings)
    return IncidentService(settings, city, publisher=pub), pub


def run(settings: Settings) -> None:
    """``python -m dashboard``: serve the screen and the API until SIGINT/SIGTERM."""
    from waitress import create_server

    city = load_city(settings.city_file)
    service, pub = make_service(settings, city)
    app = create_app(settings, city, service)
    beat = Heartbeat(settings, app)
    beat.start()
    srv = create_server(app.server, host=settings.http_host, port=settings.http_port, threads=8,
                        ident="citybrain", channel_timeout=30)

    def stop(*_: Any) -> None:
        log.info("stopping the command center")
        srv.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("command center on http://%s:%d", settings.http_host, settings.http_port)
    try:
        srv.run()
    except (OSError, ValueError):  # select() on the closed socket after stop()
        pass
    finally:
        beat.stop_event.set()
        health.write_stats(settings.run_dir, "dashboard", {**beat.stats(), "state": "down"})
        if pub is not None:
            pub.close()
        app.citybrain_auth.close()  # type: ignore[attr-defined]


def main() -> None:
    logs.setup("dashboard")
    run(Settings.from_env())
