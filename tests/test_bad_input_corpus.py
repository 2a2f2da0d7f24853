"""A bad-input corpus over the entry points other than MQTT (which tests/test_ingest_faults.py
covers with 45 messages): the HTTP API, replay files and CSV feeds. City files have their own
corpus in tests/test_city.py. Every input is refused with a specific reason, nothing crashes,
and good requests keep working in between.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import time

import pytest
import requests

from citybrain.exceptions import CitybrainError
from simulators import recording
from tests.test_api_incidents import ADMIN, city, raise_incident, srv  # noqa: F401 - fixtures

JSON = {"Content-Type": "application/json"}
SOON = time.time() + 3600

# (method, path, who, request kwargs, status, what the error must say)
HTTP_CORPUS = [
    ("POST", "/api/incidents/{inc}/actions", "op", {"data": b"{not json", "headers": JSON}, 400, "not valid JSON"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"data": b"[1, 2]", "headers": JSON}, 400, "got list"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"data": b"", "headers": JSON}, 400, "got nothing"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"data": b"action=acknowledge",
                                                   "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
     400, "not valid JSON"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"data": b'{"action": NaN}', "headers": JSON}, 400,
     "NaN is not valid JSON"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"data": b"\xff\xfe{}", "headers": JSON}, 400, "not valid JSON"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"json": {}}, 400, "action must be one of"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"json": {"action": "explode"}}, 400, "got 'explode'"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"json": {"action": 7}}, 400, "got 7"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"json": {"action": "dispatch", "unit": "NOPE"}}, 400,
     "unknown unit 'NOPE'"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"json": {"action": "acknowledge", "note": "x" * 5000}}, 400,
     "at most 2000 characters"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"json": {"action": "acknowledge", "note": 12}}, 400,
     "note must be a string"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"json": {"action": "acknowledge", "as": "admin"}}, 400,
     "unknown field(s) as"),
    ("POST", "/api/incidents/{inc}/actions", "op", {"data": b"x" * 3_000_000, "headers": JSON}, 413, "capacity"),
    ("POST", "/api/incidents/{inc}/actions", "viewer", {"json": {"action": "acknowledge"}}, 403, "operator role"),
    ("POST", "/api/incidents/{inc}/actions", None, {"json": {"action": "acknowledge"}}, 401, "authentication"),
    ("POST", "/api/incidents/{inc}/actions", "forged", {"json": {"action": "acknowledge"}}, 401, "invalid"),
    ("POST", "/api/incidents/INC-NOPE/actions", "op", {"json": {"action": "acknowledge"}}, 404, "no incident"),
    ("GET", "/api/incidents/%00", "op", {}, 400, "printable id"),
    ("GET", "/api/incidents/" + "a" * 500, "op", {}, 400, "at most 128"),
    ("GET", "/api/incidents?state=closed", "op", {}, 400, "got 'closed'"),
    ("GET", "/api/risk?level=planet", "op", {}, 400, "level must be one of"),
    ("PUT", "/api/incidents", "op", {}, 405, "use GET"),
    ("GET", "/api/incidents/..%2F..%2Fetc%2Fpasswd", "op", {}, 404, "no endpoint"),
    ("POST", "/api/users", "admin", {"json": {"name": "", "password": "long-enough", "role": "viewer"}}, 400,
     "name must be"),
    ("POST", "/api/users", "admin", {"json": {"name": "<script>", "password": "long-enough", "role": "viewer"}},
     400, "name must be"),
    ("POST", "/api/users", "admin", {"json": {"name": "bob", "password": "short", "role": "viewer"}}, 400,
     "at least 8"),
    ("POST", "/api/users", "admin", {"json": {"name": "bob", "password": "long-enough", "role": "emperor"}}, 400,
     "got 'emperor'"),
    ("POST", "/api/users", "op", {"json": {"name": "bob", "password": "long-enough", "role": "admin"}}, 403,
     "admin role"),
    ("POST", "/api/tokens", "admin", {"json": ["t"]}, 400, "got list"),
    ("POST", "/api/tokens", "admin", {"json": {"name": "t", "role": "god"}}, 400, "got 'god'"),
    ("DELETE", "/api/tokens/nope", "admin", {}, 404, "no token"),
    ("DELETE", "/api/users/nobody", "admin", {}, 404, "no user"),
    ("POST", "/api/silences", "admin", {"json": {"scope": "event", "value": "fire", "until": "tomorrow"}}, 400,
     "finite number of epoch seconds"),
    ("POST", "/api/silences", "admin", {"data": b'{"scope": "event", "value": "fire", "until": Infinity}',
                                        "headers": JSON}, 400, "Infinity is not valid JSON"),
    ("POST", "/api/silences", "admin", {"json": {"scope": "event", "value": "fire", "until": 1}}, 400,
     "in the future"),
    ("POST", "/api/silences", "admin", {"json": {"scope": "grid", "value": "NO-SUCH-GRID", "until": SOON}}, 400,
     "not a grid of this city"),
    ("POST", "/api/silences", "admin", {"json": {"scope": "event", "value": "meteor", "until": SOON}}, 400,
     "not an event type"),
    ("POST", "/api/silences", "admin", {"json": {"scope": "planet", "value": "x", "until": SOON}}, 400,
     "scope must be one of"),
    ("DELETE", "/api/silences/nope", "admin", {}, 404, "no silence"),
]


def test_every_bad_http_request_is_refused_with_its_reason_and_good_ones_keep_working(srv):  # noqa: F811
    inc = raise_incident(srv)
    tokens = {"op": srv.op, "viewer": srv.viewer, "admin": ADMIN, "forged": "x" * 40}
    assert len(HTTP_CORPUS) >= 40
    for method, path, who, kw, status, reason in HTTP_CORPUS:
        headers = dict(kw.get("headers", {}))
        if who:
            headers["Authorization"] = f"Bearer {tokens[who]}"
        r = requests.request(method, srv.url + path.format(inc=inc), headers=headers, timeout=10,
                             **{k: v for k, v in kw.items() if k != "headers"})
        assert r.headers.get("Content-Type", "").startswith("application/json"), (method, path, r.text[:300])
        assert (r.status_code, reason in r.json().get("error", "")) == (status, True), (method, path, r.text)
        # good traffic in between is served as before
        ok = requests.get(srv.url + "/api/incidents", headers={"Authorization": f"Bearer {srv.op}"},
                          timeout=10)
        assert ok.status_code == 200 and [i["id"] for i in ok.json()] == [inc]
    # nothing the corpus sent changed the incident
    assert srv.service.get(inc).state == "new" and srv.service.get(inc).units == ()


def _recording(tmp_path, lines: list[bytes]):
    p = tmp_path / "rec.jsonl.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    return p


GOOD_LINE = json.dumps({"t": 1.0, "topic": "city/sensors/wl-0001", "p": base64.b64encode(b"[]").decode(), "qos": 1,
                        "retain": False}).encode()


def _line(**change) -> bytes:
    d = json.loads(GOOD_LINE)
    d.update(change)
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


REPLAY_CORPUS = {
    "not json": (b"{oops", "line 2 is not a recorded message"),
    "not an object": (b"[1, 2, 3]", "line 2"),
    "missing topic": (_line(topic=...), "'topic'"),
    "missing payload": (_line(p=...), "'p'"),
    "payload not base64": (_line(p="!!not base64!!"), "line 2"),
    "wildcard topic": (_line(topic="city/sensors/#"), "without wildcards"),
    "empty topic": (_line(topic=""), "non-empty MQTT topic"),
    "topic not a string": (_line(topic=5), "got 5"),
    "qos 3": (_line(qos=3), "qos must be 0, 1 or 2"),
    "qos as string": (_line(qos="1"), "qos must be 0, 1 or 2"),
    "retain not bool": (_line(retain="yes"), "retain must be true or false"),
    "time not a number": (_line(t="noon"), "line 2"),
    "time infinite": (b'{"t": Infinity, "topic": "city/x", "p": "", "qos": 0, "retain": false}', "finite"),
}


@pytest.mark.parametrize("case", sorted(REPLAY_CORPUS))
def test_bad_replay_files_are_refused_naming_the_line_before_anything_is_published(tmp_path, case):
    bad, reason = REPLAY_CORPUS[case]
    path = _recording(tmp_path, [GOOD_LINE, bad, GOOD_LINE])
    with pytest.raises(CitybrainError) as e:
        recording.count(path)  # what `citybrain replay` does before publishing
    assert str(path) in str(e.value) and reason in str(e.value), str(e.value)


def test_replay_cli_says_why_and_exits_2_without_a_traceback(tmp_path):
    for path, reason in ((_recording(tmp_path, [GOOD_LINE, _line(qos=9)]), "line 2"),
                         (tmp_path / "missing.gz", "not a readable recording"),
                         (tmp_path / "plain.txt", "not a readable recording")):
        if path.name == "plain.txt":
            path.write_text("hello\n")
        r = subprocess.run([sys.executable, "-m", "citybrain.cli", "replay", str(path), "--mqtt", "mqtt://127.0.0.1:9"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and reason in r.stderr and "Traceback" not in r.stderr, r.stderr


CSV_CORPUS = {
    "no header": ("2014-01-01 00:00:00,1.0\n", "need timestamp,value"),
    "bad timestamp": ("timestamp,value\nyesterday,1.0\n", "line 2"),
    "bad value": ("timestamp,value\n2014-01-01 00:00:00,hot\n", "line 2"),
    "nan value": ("timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,nan\n", "line 3"),
    "missing value": ("timestamp,value\n2014-01-01 00:00:00\n", "line 2"),
}


@pytest.mark.parametrize("case", sorted(CSV_CORPUS))
def test_bad_csv_feeds_are_refused_naming_the_line(tmp_path, city, case):  # noqa: F811 - the fixture
    text, reason = CSV_CORPUS[case]
    p = tmp_path / "feed.csv"
    p.write_text(text)
    sensor = next(d.id for d in city.sensors())
    with pytest.raises(CitybrainError) as e:
        list(recording.csv_feed(p, city, sensor))
    assert reason in str(e.value), str(e.value)
