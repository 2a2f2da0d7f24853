"""The HTTP JSON API (CONTRACT section 3) on the command center's Flask server.

Why bearer tokens only: API clients are programs; a token in a header cannot be sent by another
web site the way a cookie can, so the API is CSRF-safe by construction and never looks at the
screen's login cookie. Every state change goes through the incident service facade with the
token holder's name as the actor, so the audit log says who did what. Every input is checked
here first and refused with a specific message; errors are JSON ``{"error": ...}``.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from citybrain.exceptions import IllegalTransition, NotFound, PermissionDenied, StoreUnavailable
from dashboard.auth import AuthStore, BadInput, Principal, check_name, check_role
from dashboard.data import DataSource, build_health

ACTIONS: tuple[str, ...] = ("acknowledge", "dispatch", "resolve", "close", "false_alarm")
MAX_NOTE = 2000
ID_MAX = 128

_STATUS = {BadInput: 400, PermissionDenied: 403, NotFound: 404, IllegalTransition: 409}


class Unauthorized(Exception):
    """No token, or a token nobody issued (HTTP 401)."""


class ServiceDown(Exception):
    """The incident service is not available (HTTP 503)."""


def error(status: int, message: str) -> tuple[Response, int]:
    resp = jsonify({"error": message})
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="citybrain"'
    return resp, status


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_body() -> dict[str, Any]:
    """The request's JSON object, strictly: NaN/Infinity (which Python's json accepts) are refused."""
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw, parse_constant=_no_constant) if raw else None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadInput(f"body must be a JSON object, got {type(body).__name__ if raw else 'nothing'}")
    return body


def _only(body: dict, allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise BadInput(f"unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def _ident(value: str, what: str) -> str:
    if not value or len(value) > ID_MAX or not value.isprintable():
        raise BadInput(f"{what} must be a printable id of at most {ID_MAX} characters")
    return value


def validate_action(body: dict, units: set[str]) -> tuple[str, str | None, str]:
    """(action, unit, note) of an action request, or :class:`BadInput` saying what is wrong."""
    _only(body, {"action", "unit", "note"})
    action = body.get("action")
    if action not in ACTIONS:
        raise BadInput(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    unit = body.get("unit")
    if unit is not None:
        if not isinstance(unit, str):
            raise BadInput("unit must be a unit id string")
        if unit not in units:
            raise BadInput(f"unknown unit {unit!r}")
        if action != "dispatch":
            raise BadInput(f"unit is only meaningful with action 'dispatch', not {action!r}")
    note = body.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise BadInput(f"note must be a string of at most {MAX_NOTE} characters")
    return action, unit, note.strip()


def create_blueprint(data: DataSource, auth: AuthStore) -> Blueprint:
    bp = Blueprint("api", __name__, url_prefix="/api")

    def needs(role: str) -> Callable:
        def deco(fn: Callable) -> Callable:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                header = request.headers.get("Authorization", "")
                scheme, _, token = header.partition(" ")
                who = auth.by_token(token.strip()) if scheme.lower() == "bearer" else None
                if who is None:
                    raise Unauthorized("missing or invalid bearer token" if header else
                                       "authentication required: Authorization: Bearer TOKEN")
                if not who.can(role):
                    raise PermissionDenied(f"{who.name} is a {who.role}; this needs the {role} role")
                g.principal = who
                return fn(*args, **kwargs)
            return wrapper
        return deco

    def service() -> Any:
        if data.service is None:
            raise ServiceDown("the incident service is not available")
        return data.service

    @bp.errorhandler(Exception)
    def _errors(e: Exception) -> tuple[Response, int]:
        if isinstance(e, Unauthorized):
            return error(401, str(e))
        if isinstance(e, (ServiceDown, StoreUnavailable)):
            return error(503, str(e))
        for cls, status in _STATUS.items():
            if isinstance(e, cls):
                return error(status, str(e) or cls.__name__)
        if hasattr(e, "code") and isinstance(getattr(e, "code", None), int):  # werkzeug HTTPException
            return error(e.code, getattr(e, "description", str(e)))
        if isinstance(e, ValueError):  # the facade refusing an argument
            return error(400, str(e))
        bp_log_exception(e)
        return error(500, "internal error")

    # ------------------------------------------------------------------ incidents

    @bp.get("/incidents")
    @needs("viewer")
    def incidents() -> Response:
        state = request.args.get("state", "open")
        if state not in ("open", "all"):
            raise BadInput(f"state must be 'open' or 'all', got {state!r}")
        return jsonify([i.to_dict() for i in service().list_incidents(state)])

    @bp.get("/incidents/<inc_id>")
    @needs("viewer")
    def incident(inc_id: str) -> Response:
        return jsonify(service().get(_ident(inc_id, "incident id")).to_dict())

    @bp.get("/incidents/<inc_id>/cap")
    @needs("viewer")
    def incident_cap(inc_id: str) -> Response:
        xml = service().cap_xml(_ident(inc_id, "incident id"))
        return Response(xml, mimetype="application/xml")

    @bp.post("/incidents/<inc_id>/actions")
    @needs("operator")
    def act(inc_id: str) -> Response:
        inc_id = _ident(inc_id, "incident id")
        action, unit, note = validate_action(_json_body(), set(data.city.units))
        svc = service()
        svc.get(inc_id)  # 404 before anything else
        who: Principal = g.principal
        inc = svc.act(inc_id, action, actor=who.name, unit=unit, note=note)
        return jsonify(inc.to_dict())

    @bp.get("/units")
    @needs("viewer")
    def units() -> Response:
        return jsonify(list(service().units()))

    @bp.get("/health")
    @needs("viewer")
    def health() -> Response:
        return jsonify(build_health(data.settings, data.clock.now()))

    @bp.get("/kpis")
    @needs("viewer")
    def kpis() -> Response:
        return jsonify(_finite(data.kpis()))

    @bp.get("/performance")
    @needs("viewer")
    def performance() -> Response:
        return jsonify(_finite(service().performance()))

    @bp.get("/risk")
    @needs("viewer")
    def risk_index() -> Response:
        level = request.args.get("level", "district")
        levels = ("district", "street", "community", "grid")
        if level not in levels:
            raise BadInput(f"level must be one of {', '.join(levels)}")
        rm = data.snapshot().risk
        return jsonify({a.id: rm.of(a.id) for a in data.city.by_level(level)})

    # ------------------------------------------------------------------ administration

    @bp.get("/users")
    @needs("admin")
    def users() -> Response:
        return jsonify(auth.users())

    @bp.post("/users")
    @needs("admin")
    def add_user() -> tuple[Response, int]:
        body = _json_body()
        _only(body, {"name", "password", "role"})
        p = auth.add_user(body.get("name"), body.get("password"), body.get("role"))
        return jsonify({"name": p.name, "role": p.role}), 201

    @bp.delete("/users/<name>")
    @needs("admin")
    def remove_user(name: str) -> Response:
        auth.remove_user(check_name(name))
        return jsonify({"deleted": name})

    @bp.get("/tokens")
    @needs("admin")
    def tokens() -> Response:
        return jsonify(auth.tokens())

    @bp.post("/tokens")
    @needs("admin")
    def issue_token() -> tuple[Response, int]:
        body = _json_body()
        _only(body, {"name", "role"})
        tid, token = auth.issue_token(check_name(body.get("name")), check_role(body.get("role")))
        return jsonify({"id": tid, "token": token, "name": body["name"], "role": body["role"]}), 201

    @bp.delete("/tokens/<tid>")
    @needs("admin")
    def revoke_token(tid: str) -> Response:
        auth.revoke_token(_ident(tid, "token id"))
        return jsonify({"deleted": tid})

    @bp.get("/silences")
    @needs("viewer")
    def silences() -> Response:
        service()
        return jsonify(data.silences())

    @bp.post("/silences")
    @needs("admin")
    def add_silence() -> tuple[Response, int]:
        body = _json_body()
        svc = service()
        params = inspect.signature(svc.add_silence).parameters
        _only(body, {n for n in params if n not in ("self", "actor")})
        missing = [n for n, p in params.items() if p.default is p.empty and n not in body and n != "actor"
                   and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if missing:
            raise BadInput(f"missing field(s): {', '.join(missing)}")
        try:
            out = svc.add_silence(**body, actor=g.principal.name) if "actor" in params else svc.add_silence(**body)
        except TypeError as e:  # e.g. until: null
            raise BadInput(f"bad silence: {e}") from e
        return jsonify(out if isinstance(out, (dict, list, str)) else out.to_dict()), 201

    @bp.delete("/silences/<sid>")
    @needs("admin")
    def remove_silence(sid: str) -> Response:
        service()
        data.remove_silence(_ident(sid, "silence id"), g.principal.name)
        return jsonify({"deleted": sid})

    @bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def unknown(rest: str) -> tuple[Response, int]:
        adapter = current_app.url_map.bind_to_environ(request.environ)
        allowed = []
        for method in ("GET", "POST", "DELETE"):
            try:
                endpoint, _ = adapter.match(request.path, method=method)
            except HTTPException:
                continue
            if endpoint != request.endpoint:
                allowed.append(method)
        if allowed:
            return error(405, f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}")
        return error(404, f"no endpoint /api/{rest}")

    return bp


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: turn them into null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def bp_log_exception(e: Exception) -> None:
    import logging

    logging.getLogger(__name__).error("API error", exc_info=e)
