"""The screen's callbacks: routing, the 1-second live refresh, selection, drill-down, actions,
health and the wall.

Why the refresh is one callback with a version check: a screen polls every second, and most
seconds nothing changed. The callback compares the snapshot's etag and a hash per dynamic trace
with what the browser already has (kept in the ``sync`` store) and sends only what differs, as
a ``Patch`` of the map figure (geometry is sent once per view). Actions run as the logged-in
user through the incident service facade, after a role check on the server: a disabled button
is a courtesy, the check is the rule.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import flask
from dash import ALL, Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from citybrain.city import City
from citybrain.clock import Clock
from citybrain.exceptions import CitybrainError
from citybrain.vocab import SENSOR_KINDS
from dashboard import figures, layout, risk
from dashboard.api import ACTIONS, MAX_NOTE
from dashboard.data import DataSource

CITY = "__city__"
MAX_CHARTS = 4
WINDOW_BEFORE_S = 1800.0
WINDOW_AFTER_S = 600.0


@dataclass
class ScreenContext:
    """What the callbacks share: data, cached geometry, clock, timings for the heartbeat."""

    data: DataSource
    city: City
    clock: Clock
    tick_ms: int = 500
    wall_rotate_s: float = 15.0
    auth: Any = None  # dashboard.auth.AuthStore (users and tokens for the admin page)
    geoms: figures.GeometryCache = field(init=False)
    timings: deque = field(default_factory=lambda: deque(maxlen=500))  # (seconds, kind)
    updates: int = 0

    def __post_init__(self) -> None:
        self.geoms = figures.GeometryCache(self.city)


def who() -> tuple[str, str]:
    return flask.session.get("user", ""), flask.session.get("role", "viewer")


def _digest(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def breadcrumb(city: City, area: str | None) -> list[tuple[str | None, str]]:
    chain = [(None, city.name)]
    if area:
        chain += [(a.id, f"{a.level.title()} {a.name}") for a in reversed(city.chain(area))]
    return chain


def child_rows(city: City, rm: risk.RiskMap, area: str | None) -> list[tuple[str, str, str, float]]:
    kids = [city.areas[k] for k in city.children(area)]
    return sorted(((a.id, a.name, a.level, rm.of(a.id)) for a in kids), key=lambda r: (-r[3], r[1]))


def callback_request(deps: list[dict], output: str, values: dict[str, Any], changed: str) -> dict:
    """The JSON body the Dash renderer POSTs to ``/_dash-update-component`` for one callback.

    ``deps`` is ``GET /_dash-dependencies``; ``output`` one ``id.property`` the callback writes;
    ``values`` maps ``id.property`` of its inputs and states to their values. For the bench and
    for tests that call a callback as a browser (or a forger) would.
    """
    cb = next(d for d in deps if output in d["output"].strip(".").split("..."))

    def pack(items: list[dict]) -> list[dict]:
        return [{"id": i["id"], "property": i["property"], "value": values.get(f"{i['id']}.{i['property']}")}
                for i in items]

    outs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in cb["output"].strip(".").split("...")]
    return {"output": cb["output"], "outputs": outs if len(outs) > 1 else outs[0], "inputs": pack(cb["inputs"]),
            "state": pack(cb["state"]), "changedPropIds": [changed]}


def register(app: Dash, sc: ScreenContext) -> None:
    data, city = sc.data, sc.city
    names = {a.id: a.name for a in city.by_level("district")}

    @app.callback(Output("page", "children"), Input("url", "pathname"))
    def route(path: str | None) -> Any:
        user, role = who()
        if path == "/wall":
            return layout.wall_page(sc.tick_ms)
        if path == "/health":
            return layout.health_page(city.name, user, role)
        if path == "/admin":
            return layout.admin_page(city.name, user, role)
        return layout.command_page(city.name, user, role, sc.tick_ms)

    # ------------------------------------------------------------------ live refresh

    @app.callback(
        Output("map", "figure"), Output("kpis", "children"), Output("queue", "children"),
        Output("queue-count", "children"), Output("crumbs", "children"), Output("children", "children"),
        Output("legend", "children"), Output("sync", "data"),
        Input("tick", "n_intervals"), Input("area", "data"), Input("layers", "value"),
        Input("map", "relayoutData"), Input("selected", "data"), State("sync", "data"),
    )
    def refresh(_n, area, layers_on, relayout, selected, sync):
        t0 = time.perf_counter()
        try:
            return _refresh(area, layers_on or [], relayout, selected, sync or {}, ctx.triggered_id)
        finally:
            sc.timings.append((time.perf_counter() - t0, "refresh"))
            sc.updates += 1

    def _refresh(area, layers_on, relayout, selected, sync, trig):
        snap = data.snapshot()
        geom = sc.geoms.get(area)
        area_key = area or CITY
        full = sync.get("area") != area_key or not sync.get("traces")
        new = dict(sync, area=area_key)
        if full or trig == "area":
            new["box"] = None
        elif trig == "map":
            box = figures.view_box(geom, relayout) if relayout and "xaxis.range[0]" in relayout else None
            new["box"] = list(box) if box else None
        k = data.kpis()
        kpi_key = _digest(k)
        if not full and trig == "tick" and sync.get("etag") == snap.etag and sync.get("kpi") == kpi_key \
                and sync.get("age") == int(snap.t // 10):
            raise PreventUpdate
        new.update(etag=snap.etag, kpi=kpi_key, age=int(snap.t // 10))
        lay = figures.Layers(sensors="sensors" in layers_on, cameras="cameras" in layers_on,
                             units="units" in layers_on, incidents="incidents" in layers_on,
                             box=tuple(new["box"]) if new.get("box") else None, selected=selected)
        dyn = figures.dynamic_traces(geom, snap.risk, snap.incidents, snap.units, snap.offline, lay)
        hashes = {str(i): _digest(t) for i, t in dyn.items()}
        if full:
            fig: Any = figures.map_figure(geom, dyn)
        else:
            changed = [i for i in figures.DYNAMIC if hashes[str(i)] != sync["traces"].get(str(i))]
            fig = no_update
            if changed:
                fig = Patch()
                for i in changed:
                    fig["data"][i] = dyn[i]
        new["traces"] = hashes
        q_key = _digest([snap.etag, selected, int(snap.t // 10)])
        queue = count = no_update
        if full or q_key != sync.get("queue"):
            queue = layout.queue_items(snap.incidents, snap.t, selected, names)
            count = str(len(snap.incidents))
            new["queue"] = q_key
        kpis = layout.kpi_tiles(k) if full or kpi_key != sync.get("kpi_drawn") else no_update
        new["kpi_drawn"] = kpi_key
        a_key = _digest([area_key, {c[0]: c[3] for c in child_rows(city, snap.risk, area)}])
        crumbs = kids = legend = no_update
        if full or a_key != sync.get("areas"):
            crumbs = layout.crumbs(breadcrumb(city, area))
            kids = layout.children_list(child_rows(city, snap.risk, area))
            legend = layout.legend() if full else no_update
            new["areas"] = a_key
        return fig, kpis, queue, count, crumbs, kids, legend, new

    # ------------------------------------------------------------------ selection and drill-down

    @app.callback(
        Output("selected", "data"), Output("area", "data"),
        Input("map", "clickData"), Input({"type": "q", "id": ALL}, "n_clicks"),
        Input({"type": "crumb", "id": ALL}, "n_clicks"), Input({"type": "child", "id": ALL}, "n_clicks"),
        State("area", "data"), prevent_initial_call=True,
    )
    def select(click, _q, _c, _k, area):
        trig = ctx.triggered_id
        if isinstance(trig, dict):
            if not ctx.triggered[0]["value"]:  # a button just (re)rendered, not clicked
                raise PreventUpdate
            if trig["type"] == "q":
                return trig["id"], no_update
            target = None if trig["id"] == CITY else trig["id"]
            return no_update, target if target is None or target in city.areas else area
        pts = (click or {}).get("points") or []
        if not pts:
            raise PreventUpdate
        p = pts[0]
        if p.get("curveNumber") == figures.T_INCIDENTS and p.get("customdata"):
            return p["customdata"], no_update
        if p.get("curveNumber") == figures.T_LABELS and p.get("customdata") in city.areas:
            return no_update, p["customdata"]
        raise PreventUpdate

    # ------------------------------------------------------------------ detail

    @app.callback(
        Output("detail", "children"), Output("actions", "style"), Output("act-unit", "options"),
        Output("detail-sync", "data"), *[Output(f"act-{a}", "disabled") for a in ACTIONS],
        Input("selected", "data"), Input("tick", "n_intervals"), State("detail-sync", "data"),
    )
    def detail(selected, _n, dsync):
        return _detail(selected, dsync or {})

    def _detail(selected, dsync):
        can_act = who()[1] in ("operator", "admin")
        if not selected:
            if dsync.get("key") == "none":
                raise PreventUpdate
            return (html.P("Select an incident in the queue or on the map.", className="empty"),
                    {"display": "none"}, [], {"key": "none"}, *[True] * len(ACTIONS))
        inc = data.incident(selected)
        now = sc.clock.now()
        key = f"{selected}:{inc.version if inc else '-'}:{inc.state if inc else '-'}:{int(now // 10)}"
        if key == dsync.get("key"):
            raise PreventUpdate
        if inc is None:
            return (html.P(f"Incident {selected} is no longer available.", className="empty"),
                    {"display": "none"}, [], {"key": key}, *[True] * len(ACTIONS))
        snap = data.snapshot()
        units_by_id = {u["id"]: u for u in snap.units}
        sugg = data.suggestions(inc.id)
        body = layout.detail_body(inc, now, _charts(inc, now), sugg, units_by_id)
        allowed = layout.possible_actions(inc.state) if can_act else set()
        return (body, {}, layout.unit_options(sugg, snap.units), {"key": key},
                *[a not in allowed for a in ACTIONS])

    def _charts(inc, now) -> list:
        sources: dict[str, list] = {}
        for e in inc.evidence:
            if e.source_kind != "camera" and e.value is not None:
                sources.setdefault(e.source, []).append((e.t, e.value))
        out = []
        for dev_id, pts in list(sources.items())[:MAX_CHARTS]:
            dev = city.devices.get(dev_id)
            start = min(inc.started_at, *(p[0] for p in pts))
            end = max(p[0] for p in pts)
            win = data.window(dev_id, start - WINDOW_BEFORE_S, min(end + WINDOW_AFTER_S, max(now, end)))
            t, v = win if win else ([], [])
            kind = SENSOR_KINDS.get(dev.kind) if dev else None
            fig = figures.evidence_figure(dev_id, dev.unit if dev else "", t, v, start, end,
                                          dict(dev.limits) if dev else None, pts,
                                          title=f"{kind.label} · " if kind else "")
            out.append(dcc.Graph(figure=fig, config={"displayModeBar": False}, className="evchart"))
        return out

    # ------------------------------------------------------------------ actions

    @app.callback(
        Output("act-msg", "children"), Output("act-note", "value"),
        *[Input(f"act-{a}", "n_clicks") for a in ACTIONS],
        State("selected", "data"), State("act-unit", "value"), State("act-note", "value"),
        prevent_initial_call=True,
    )
    def act(*args):
        selected, unit, note = args[-3:]
        trig = ctx.triggered_id
        if not trig or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        action = trig.removeprefix("act-")
        user, role = who()
        if role not in ("operator", "admin"):
            return f"✗ {user or 'you'} ({role}) may not {action.replace('_', ' ')}: operators only.", no_update
        if not selected:
            return "✗ select an incident first.", no_update
        if data.service is None:
            return "✗ the incident service is not available.", no_update
        if action == "dispatch" and not unit:
            return "✗ choose a unit to dispatch.", no_update
        try:
            inc = data.service.act(selected, action, actor=user, unit=unit if action == "dispatch" else None,
                                   note=(note or "").strip()[:MAX_NOTE])
        except (CitybrainError, ValueError) as e:
            return f"✗ {action.replace('_', ' ')} refused: {e}", no_update
        done = f" ({unit})" if action == "dispatch" else ""
        return f"✓ {action.replace('_', ' ')}{done}: {inc.id} is now {inc.state.replace('_', ' ')}.", ""

    # ------------------------------------------------------------------ health

    @app.callback(
        Output("components", "children"), Output("flow", "children"), Output("rejects-chart", "figure"),
        Output("recent-rejects", "children"), Input("health-tick", "n_intervals"),
    )
    def health(_n):
        from dashboard.data import build_health

        h = build_health(data.settings, sc.clock.now())
        return (layout.components(h["components"], h["problems"]), layout.flow(h), figures.rejects_figure(h["rejected_by_reason"]),
                layout.recent_rejects(h["recent_rejects"]))

    # ------------------------------------------------------------------ administration

    @app.callback(
        Output("users", "children"), Output("tokens", "children"), Output("silences", "children"),
        Output("admin-msg", "children"),
        Input("add-user", "n_clicks"), Input("issue-token", "n_clicks"),
        Input({"type": "rm-user", "id": ALL}, "n_clicks"), Input({"type": "rm-token", "id": ALL}, "n_clicks"),
        Input({"type": "rm-silence", "id": ALL}, "n_clicks"),
        State("new-user", "value"), State("new-pass", "value"), State("new-role", "value"),
        State("tok-name", "value"), State("tok-role", "value"),
    )
    def admin(_a, _i, _ru, _rt, _rs, name, password, role, tok_name, tok_role):
        user, my_role = who()
        if my_role != "admin":
            raise PreventUpdate
        msg: Any = ""
        trig = ctx.triggered_id
        clicked = bool(ctx.triggered and ctx.triggered[0]["value"])
        try:
            if trig == "add-user" and clicked:
                p = sc.auth.add_user(name, password, role)
                msg = f"✓ user {p.name} ({p.role}) added."
            elif trig == "issue-token" and clicked:
                tid, token = sc.auth.issue_token(tok_name, tok_role)
                msg = html.Span(["✓ token for ", html.B(tok_name), " (shown once, copy it now): ",
                                 html.Code(token, id="new-token")])
            elif isinstance(trig, dict) and clicked:
                if trig["type"] == "rm-user":
                    sc.auth.remove_user(trig["id"])
                elif trig["type"] == "rm-token":
                    sc.auth.revoke_token(trig["id"])
                elif data.service is not None:
                    data.remove_silence(trig["id"], user)
                msg = f"✓ removed {trig['id']}."
        except (CitybrainError, ValueError) as e:
            msg = f"✗ {e}"
        silences: Any = html.P("The incident service is not available.", className="empty")
        if data.service is not None:
            rows = data.silences()
            silences = layout.table(rows, [k for k in (rows[0] if rows else {}) if k != "type"][:6], "rm-silence")
        return (layout.table(sc.auth.users(), ["name", "role", "created"], "rm-user", "name"),
                layout.table(sc.auth.tokens(), ["id", "name", "role", "created"], "rm-token"), silences, msg)

    # ------------------------------------------------------------------ wall

    app.clientside_callback("function(n) { return window.innerWidth; }",  # sizes for a 4K wall
                            Output("wall-width", "data"), Input("wall-tick", "n_intervals"))

    @app.callback(
        Output("wall-title", "children"), Output("wall-body", "children"), Output("wall-kpis", "children"),
        Output("wall-clock", "children"), Output("wall-sync", "data"),
        Input("wall-tick", "n_intervals"), State("wall-sync", "data"), State("wall-width", "data"),
    )
    def wall(_n, ws, width):
        now = sc.clock.now()
        snap = data.snapshot()
        phase = int(now // sc.wall_rotate_s) % 3
        clock_text = time.strftime("%H:%M:%S UTC", time.gmtime(now))
        k = data.kpis()
        scale = round(min(max((width or 1920) / 1920, 1.0), 3.0), 2)
        key = _digest([phase, snap.etag, int(now // 10), k, scale])
        if key == (ws or {}).get("key"):
            return no_update, no_update, no_update, clock_text, no_update
        if phase == 2:
            title, body = f"Incidents ({len(snap.incidents)} open)", layout.incident_wall(snap.incidents, now, names)
        else:
            area = risk.worst_child(city, snap.risk, None) if phase == 1 else None
            title = (f"Worst district: {city.areas[area].name} (risk {snap.risk.of(area):.0f})" if area
                     else f"City: {city.name}")
            geom = sc.geoms.get(area)
            dyn = figures.dynamic_traces(geom, snap.risk, snap.incidents, snap.units, snap.offline, figures.Layers(label_size=round(24 * scale), scale=scale))
            fig = figures.map_figure(geom, dyn)
            fig["layout"]["uirevision"] = None
            body = html.Div(className="wallmap", children=[
                dcc.Graph(figure=fig, config={"staticPlot": True}, className="map", style={"height": "100%"}),
                html.Div(className="legend walllegend", children=layout.legend()[:-1] + layout.unit_legend()),
            ])
        return (html.Span(title, id="wall-view", **{"data-phase": str(phase)}), body, layout.kpi_tiles(k),
                clock_text, {"key": key})
