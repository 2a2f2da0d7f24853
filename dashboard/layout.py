"""The screen's layout: the command view, the health view and the big-screen wall.

Why the controls are static and only their contents change: an operator typing a note must not
lose it because an incident changed a second later, so the action panel is laid out once and
callbacks fill in its options and enable or disable its buttons. Pure functions of their
arguments (no data access) so that callbacks can rebuild any part.
"""

from __future__ import annotations

import time
from typing import Any

from dash import dcc, html

from citybrain.clock import iso
from citybrain.records import Incident
from dashboard import risk
from dashboard.api import ACTIONS
from dashboard.figures import SEVERITY_COLOUR, UNIT_COLOUR

ACTION_LABEL = {"acknowledge": "Acknowledge", "dispatch": "Dispatch", "resolve": "Resolve", "close": "Close",
                "false_alarm": "False alarm"}
LAYER_OPTIONS = [{"label": " Incidents", "value": "incidents"}, {"label": " Units", "value": "units"},
                 {"label": " Sensors", "value": "sensors"}, {"label": " Cameras", "value": "cameras"}]
RISK_HELP = ("0-100 per grid and area: open incidents weighted by severity and state, corroborating warnings, "
             "time past the acknowledge/arrival targets, and the share of offline devices (docs/RISK_INDEX.md).")
QUEUE_MAX = 50  # an operator works the top of the queue; drawing 2,000 rows would cost every update
GRAPH_CONFIG = {"scrollZoom": True, "displaylogo": False, "displayModeBar": False, "doubleClick": "reset"}


def possible_actions(state: str) -> set[str]:
    """Buttons worth offering in a state. A courtesy only: the incident service decides.

    Only the end of the lifecycle is narrowed (a resolved incident can only be closed, a closed
    one nothing); before that every action is offered and an illegal one is refused with the
    service's reason.
    """
    if state in ("closed", "false_alarm", "merged"):
        return set()
    if state == "resolved":
        return {"close"}
    return set(ACTIONS)


def ago(seconds: float) -> str:
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


def hhmm(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def duration(seconds: float | None) -> str:
    return "—" if seconds is None else ago(seconds)


# ---------------------------------------------------------------- frame


def header(city_name: str, user: str, role: str, active: str) -> html.Header:
    links = [("/", "Command"), ("/health", "System health"), ("/wall", "Wall")]
    if role == "admin":
        links.append(("/admin", "Administration"))
    return html.Header(className="topbar", children=[
        html.Div([html.Span("CITY BRAIN", className="brand"), html.Span(city_name, className="city-name")]),
        html.Nav([dcc.Link(label, href=href, className="nav" + (" active" if href == active else ""))
                  for href, label in links]),
        html.Div(className="who", children=[
            html.Span(user, id="who-name"), html.Span(role, id="who-role", className=f"role role-{role}"),
            html.Form(html.Button("Log out", className="linkbtn"), method="post", action="/logout"),
        ]),
    ])


def root() -> html.Div:
    return html.Div([dcc.Location(id="url"), html.Div(id="page")])


# ---------------------------------------------------------------- command view


def command_page(city_name: str, user: str, role: str, tick_ms: int) -> html.Div:
    can_act = role in ("operator", "admin")
    return html.Div(className="page command", children=[
        header(city_name, user, role, "/"),
        dcc.Interval(id="tick", interval=tick_ms),
        dcc.Store(id="sync", data={}),
        dcc.Store(id="area", data=None),
        dcc.Store(id="selected", data=None),
        dcc.Store(id="detail-sync", data={}),
        html.Div(id="kpis", className="kpis"),
        html.Div(className="main", children=[
            html.Section(className="mapcol panel", children=[
                html.Div(className="maptools", children=[
                    html.Div(id="crumbs", className="crumbs"),
                    dcc.Checklist(id="layers", options=LAYER_OPTIONS, value=["incidents", "units"], inline=True,
                                  className="layers"),
                ]),
                dcc.Graph(id="map", className="map", config=GRAPH_CONFIG, figure={"data": [], "layout": {}}),
                html.Div(className="mapfoot", children=[
                    html.Div(className="legend", children=[html.Div(id="legend", className="legend"),
                                                           html.Div(unit_legend(), className="legend")]),
                    html.Div(id="children", className="children")]),
            ]),
            html.Section(className="sidecol", children=[
                html.Div(className="panel queue-panel", children=[
                    html.H2(["Incident queue ", html.Span(id="queue-count", className="count")]),
                    html.Div(id="queue", className="queue"),
                ]),
                html.Div(className="panel detail-panel", children=[
                    html.Div(id="detail", className="detail",
                             children=html.P("Select an incident in the queue or on the map.", className="empty")),
                    html.Div(id="actions", className="actions", style={"display": "none"}, children=[
                        html.Div(className="actrow", children=[
                            dcc.Dropdown(id="act-unit", placeholder="Unit to dispatch", className="unitpick",
                                         clearable=True, searchable=True),
                            dcc.Input(id="act-note", type="text", placeholder="Note for the log (optional)",
                                      className="note", maxLength=2000, debounce=False),
                        ]),
                        html.Div(className="actrow buttons", children=[
                            html.Button(ACTION_LABEL[a], id=f"act-{a}", className=f"btn btn-{a}", n_clicks=0,
                                        disabled=not can_act) for a in ACTIONS
                        ]),
                        html.Div(id="act-msg", className="actmsg",
                                 children="" if can_act else f"Signed in as {role}: read-only."),
                    ]),
                ]),
            ]),
        ]),
    ])


def kpi_tiles(k: dict[str, Any]) -> list:
    sev = k["open_by_severity"]

    def tile(label: str, value: Any, sub: Any = "", cls: str = "") -> html.Div:
        return html.Div(className=f"kpi {cls}", children=[html.Div(label, className="kpi-label"),
                                                           html.Div(value, className="kpi-value"),
                                                           html.Div(sub, className="kpi-sub")])

    sev_chips = [html.Span(f"{sev.get(s, 0)} {s}", className="chip", style={"borderColor": SEVERITY_COLOUR[s]})
                 for s in ("Extreme", "Severe", "Moderate", "Minor") if sev.get(s)]
    down = k.get("components_down") or []
    return [
        tile("Open incidents", k["open"], sev_chips or "none open", "kpi-open" + (" alarm" if k["escalated"] else "")),
        tile("Escalated", k["escalated"], "no acknowledgement in time" if k["escalated"] else "none",
             "alarm" if k["escalated"] else ""),
        tile("Units", f"{k['units_available']} free", f"{k['units_busy']} busy of {k['units_total']}"),
        tile("Time to acknowledge", duration(k["median_ack_s"]), "median today"),
        tile("Time to arrive", duration(k["median_arrive_s"]), "median today"),
        tile("Devices online", f"{k['devices_online_pct']:.1f}%", ""),
        tile("Ingest", f"{k['ingest_rate']:.0f}/s", f"lag {k['lag']:,}", "warn" if k["lag"] > 10_000 else ""),
        tile("Components", "all up" if not down else f"{len(down)} down", ", ".join(down)[:40],
             "alarm" if down else ""),
    ]


def queue_items(incidents: list[Incident], now: float, selected: str | None, names: dict[str, str] | None = None,
                limit: int = QUEUE_MAX) -> list:
    """The worst ``limit`` incidents (the queue's order); the rest are counted, not drawn."""
    if not incidents:
        return [html.P("No open incidents. The city is calm.", className="empty")]
    out = []
    for i in incidents[:limit]:
        cls = "qitem" + (" escalated" if i.state == "escalated" else "") + (" selected" if i.id == selected else "")
        out.append(html.Button(id={"type": "q", "id": i.id}, className=cls, n_clicks=0, children=[
            html.Span(i.severity, className="sev", style={"background": SEVERITY_COLOUR.get(i.severity, "#999")}),
            html.Span(i.title or i.event.replace("_", " ").capitalize(), className="qtitle"),
            html.Span(f"{(names or {}).get(i.district, i.district)} · {i.area}", className="qarea"),
            html.Span(i.state.replace("_", " "), className=f"state st-{i.state}"),
            html.Span(ago(now - i.detected_at), className="age"),
            html.Span(i.id, className="qid"),
        ]))
    if len(incidents) > limit:
        out.append(html.P(f"+{len(incidents) - limit} more open incidents of lower rank (see the API).",
                          className="empty"))
    return out


def crumbs(chain: list[tuple[str | None, str]]) -> list:
    """Breadcrumb buttons, city first: [(area id or None, label), ...]."""
    out: list = []
    for k, (aid, label) in enumerate(chain):
        if k:
            out.append(html.Span("›", className="sep"))
        out.append(html.Button(label, id={"type": "crumb", "id": aid or "__city__"}, className="crumb", n_clicks=0))
    return out


def children_list(kids: list[tuple[str, str, str, float]]) -> list:
    """Child areas sorted riskiest first: (id, name, level, score)."""
    if not kids:
        return [html.Span("A grid: the finest level.", className="muted")]
    level = kids[0][2]
    items = [html.Span(f"{level.title()}s by risk:", className="muted")]
    for aid, name, _, score in kids[:12]:
        colour = risk.BUCKETS[risk.bucket(score)][2]
        items.append(html.Button([html.Span(f"{score:.0f}", className="riskchip", style={"background": colour}),
                                  name], id={"type": "child", "id": aid}, className="child", n_clicks=0))
    if len(kids) > 12:
        items.append(html.Span(f"+{len(kids) - 12} more on the map", className="muted"))
    return items


def legend() -> list:
    rows = [html.Span("Risk index", className="legend-title")]
    for r in risk.legend():
        rows.append(html.Span([html.I(style={"background": r["colour"]}), f"{r['name']} {r['range']}"],
                              className="legend-item"))
    rows.append(html.Span("(?)", className="muted help", title=RISK_HELP))
    return rows


def detail_body(inc: Incident, now: float, charts: list, suggestions: list[dict], units_by_id: dict) -> list:
    """Everything about one incident: what, where, evidence, timeline, suggested units."""
    head = html.Div(className="dhead", children=[
        html.Span(inc.severity, className="sev", style={"background": SEVERITY_COLOUR.get(inc.severity, "#999")}),
        html.H2(inc.title or inc.event.replace("_", " ").capitalize(), className="dtitle"),
        html.Span(inc.state.replace("_", " "), className=f"state st-{inc.state}"),
    ])
    facts = html.Dl(className="facts", children=[
        html.Dt("Incident"), html.Dd(inc.id, id="detail-id"),
        html.Dt("Event"), html.Dd(f"{inc.event} ({inc.category}), {inc.urgency}, {inc.certainty}"),
        html.Dt("Where"), html.Dd(f"grid {inc.area}, district {inc.district}  [{inc.location[0]:.5f}, "
                                  f"{inc.location[1]:.5f}]"),
        html.Dt("Started"), html.Dd(f"{iso(inc.started_at)} (event time), raised {ago(now - inc.detected_at)} ago"),
        html.Dt("Units"), html.Dd(", ".join(inc.units) or "none assigned"),
    ])
    cams = [e for e in inc.evidence if e.source_kind == "camera"]
    cam_list = html.Ul(className="cams", children=[
        html.Li(f"{hhmm(e.t)}  {e.source}: {e.detail or 'camera event'}") for e in cams[-10:]
    ]) if cams else None
    timeline = html.Ol(className="timeline", children=[
        html.Li([html.Span(hhmm(h.t), className="t"), html.Span(h.state.replace("_", " "), className=f"state st-{h.state}"),
                 html.Span(h.actor, className="actor"), html.Span(h.note, className="hnote")])
        for h in inc.history
    ] or [html.Li("no history yet", className="muted")])
    sugg = html.Ul(className="sugg", children=[
        html.Li([html.Span(s["id"], className="uid"),
                 html.Span(str(s.get("type") or units_by_id.get(s["id"], {}).get("type", "")), className="utype"),
                 html.Span(_sugg_detail(s, units_by_id), className="muted")])
        for s in suggestions
    ] or [html.Li("no unit available", className="muted")])
    return [head, facts,
            html.H3("Evidence"), html.Div(charts or html.P("No sensor readings recorded.", className="empty"),
                                          className="charts"),
            *([html.H3("Camera events"), cam_list] if cam_list else []),
            html.Div(className="twocol", children=[
                html.Div([html.H3("Timeline"), timeline]),
                html.Div([html.H3("Suggested units"), sugg]),
            ])]


def _sugg_detail(s: dict, units_by_id: dict) -> str:
    parts = []
    state = s.get("state") or units_by_id.get(s["id"], {}).get("state")
    if state:
        parts.append(str(state).replace("_", " "))
    for key, fmt in (("distance_m", "{:.1f} km"), ("eta_s", "ETA {}")):
        if s.get(key) is not None:
            v = s[key]
            parts.append(fmt.format(v / 1000.0) if key == "distance_m" else fmt.format(ago(v)))
    return ", ".join(parts)


def unit_options(suggestions: list[dict], units: list[dict]) -> list[dict]:
    """Suggested units first (marked), then every other available unit."""
    seen, opts = set(), []
    for s in suggestions:
        seen.add(s["id"])
        opts.append({"label": f"★ {s['id']} ({s.get('type') or ''})", "value": s["id"]})
    for u in units:
        if u["id"] not in seen and u.get("state") == "available":
            opts.append({"label": f"{u['id']} ({u.get('type', '')})", "value": u["id"]})
    return opts


# ---------------------------------------------------------------- health view


def health_page(city_name: str, user: str, role: str) -> html.Div:
    return html.Div(className="page health", children=[
        header(city_name, user, role, "/health"),
        dcc.Interval(id="health-tick", interval=2000),
        html.Div(className="healthgrid", children=[
            html.Div(className="panel", children=[html.H2("Components"), html.Div(id="components", className="comps")]),
            html.Div(className="panel", children=[html.H2("Flow"), html.Div(id="flow", className="flow")]),
            html.Div(className="panel wide", children=[dcc.Graph(id="rejects-chart", config={"displayModeBar": False})]),
            html.Div(className="panel wide", children=[html.H2("Recent rejected messages"),
                                                       html.Div(id="recent-rejects")]),
        ]),
    ])


def components(comps: dict[str, str], problems: dict[str, str] | None = None) -> list:
    if not comps:
        return [html.P("No component has reported yet.", className="empty")]
    problems = problems or {}
    return [html.Div(className=f"comp {state}", title=problems.get(name, ""),
                     children=[html.Span(state.upper(), className="dot"), html.Span(name)]
                     + ([html.Span(problems[name][:160], className="why")] if name in problems else []))
            for name, state in comps.items()]


def flow(h: dict) -> list:
    rows = [("Ingest rate", f"{h['ingest_rate']:.1f} msg/s"), ("Consumer lag", f"{h['lag']:,} records"),
            ("Accepted", f"{h['accepted']:,}"), ("Rejected", f"{h['rejected']:,}")]
    rows += [(k.replace("_", " ").capitalize(), f"{v:,}") for k, v in h.get("streams", {}).items() if v is not None]
    return [html.Div([html.Span(k, className="k"), html.Span(v, className="v")], className="flowrow") for k, v in rows]


def recent_rejects(items: list[dict]) -> Any:
    if not items:
        return html.P("Nothing rejected recently.", className="empty")
    head = html.Tr([html.Th(x) for x in ("time", "topic", "reason", "detail", "payload")])
    rows = [html.Tr([html.Td(hhmm(float(r.get("t", 0)))), html.Td(str(r.get("topic", ""))),
                     html.Td(str(r.get("reason", "")), className="reason"), html.Td(str(r.get("detail", ""))[:120]),
                     html.Td(html.Code(str(r.get("payload", ""))[:80]))]) for r in sorted(items, key=lambda r: -float(r.get("t", 0)))[:20]]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="rejects")


# ---------------------------------------------------------------- wall


def wall_page(tick_ms: int) -> html.Div:
    """No controls: a title, the rotating view, and a ticker of the worst incidents."""
    return html.Div(className="page wall", children=[
        dcc.Interval(id="wall-tick", interval=tick_ms),
        dcc.Store(id="wall-sync", data={}),
        dcc.Store(id="wall-width", data=None),
        html.Div(className="wallhead", children=[html.Span("CITY BRAIN", className="brand"),
                                                 html.Span(id="wall-title", className="wall-title"),
                                                 html.Span(id="wall-clock", className="wall-clock")]),
        html.Div(id="wall-kpis", className="kpis wallkpis"),
        html.Div(id="wall-body", className="wall-body"),
    ])


def incident_wall(incidents: list[Incident], now: float, names: dict[str, str] | None = None) -> html.Div:
    if not incidents:
        return html.Div(html.P("No open incidents. The city is calm.", className="empty huge"), className="cards")
    return html.Div(className="cards", children=[
        html.Div(className="card" + (" escalated" if i.state == "escalated" else ""),
                 style={"borderColor": SEVERITY_COLOUR.get(i.severity, "#999")}, children=[
            html.Div(i.severity.upper(), className="card-sev", style={"color": SEVERITY_COLOUR.get(i.severity)}),
            html.Div(i.event.replace("_", " ").capitalize(), className="card-title"),
            html.Div(f"{(names or {}).get(i.district, i.district)} · {i.area}", className="card-where"),
            html.Div([html.Span(i.state.replace("_", " "), className=f"state st-{i.state}"),
                      html.Span(ago(now - i.detected_at), className="age")], className="card-foot"),
            html.Div(", ".join(i.units) or "no unit yet", className="card-units"),
        ]) for i in incidents[:12]
    ])


def unit_legend() -> list:
    """Unit states (squares) and incident severities (circles; diamond = escalated)."""
    units = [html.Span("Units", className="legend-title")]
    units += [html.Span([html.I(className="sq", style={"background": c}), s.replace("_", " ")],
                        className="legend-item") for s, c in UNIT_COLOUR.items()]
    sev = [html.Span("Incidents", className="legend-title")]
    sev += [html.Span([html.I(className="dot", style={"background": SEVERITY_COLOUR[s]}), s], className="legend-item")
            for s in ("Extreme", "Severe", "Moderate", "Minor")]
    return units + sev


# ---------------------------------------------------------------- administration (admins only)


def admin_page(city_name: str, user: str, role: str) -> html.Div:
    if role != "admin":
        return html.Div(className="page", children=[header(city_name, user, role, "/admin"),
                                                    html.P("Administration is for admins.", className="empty")])
    roles = [{"label": r, "value": r} for r in ("viewer", "operator", "admin")]
    return html.Div(className="page admin", children=[
        header(city_name, user, role, "/admin"),
        html.Div(className="healthgrid", children=[
            html.Div(className="panel", children=[
                html.H2("Users"),
                html.Div(className="actrow pad", children=[
                    dcc.Input(id="new-user", placeholder="user name", className="note"),
                    dcc.Input(id="new-pass", type="password", placeholder="password (8+ characters)", className="note"),
                    dcc.Dropdown(id="new-role", options=roles, value="operator", clearable=False, className="unitpick"),
                    html.Button("Add user", id="add-user", className="btn btn-acknowledge", n_clicks=0),
                ]),
                html.Div(id="users"),
            ]),
            html.Div(className="panel", children=[
                html.H2("API tokens"),
                html.Div(className="actrow pad", children=[
                    dcc.Input(id="tok-name", placeholder="token name (who uses it)", className="note"),
                    dcc.Dropdown(id="tok-role", options=roles, value="viewer", clearable=False, className="unitpick"),
                    html.Button("Issue token", id="issue-token", className="btn btn-acknowledge", n_clicks=0),
                ]),
                html.Div(id="tokens"),
            ]),
            html.Div(className="panel wide", children=[html.H2("Silences"), html.Div(id="silences")]),
            html.Div(id="admin-msg", className="actmsg wide pad"),
        ]),
    ])


def table(rows: list[dict], cols: list[str], remove: str | None = None, key: str = "id") -> Any:
    """A plain table; with ``remove``, a remove button per row (id ``{"type": remove, "id": row[key]}``)."""
    if not rows:
        return html.P("None.", className="empty")
    head = html.Tr([html.Th(c) for c in cols] + ([html.Th("")] if remove else []))
    body = []
    for r in rows:
        cells = [html.Td(hhmm(r[c]) if c == "created" else str(r.get(c, ""))) for c in cols]
        if remove:
            cells.append(html.Td(html.Button("Remove", id={"type": remove, "id": str(r[key])}, n_clicks=0,
                                             className="linkbtn")))
        body.append(html.Tr(cells))
    return html.Table([html.Thead(head), html.Tbody(body)], className="rejects")
