"""The incident service: merging, idempotence, lifecycle, escalation, silences, dispatch, CAP,
audit; against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from xml.etree import ElementTree as ET

import pytest
import xmlschema

from alerts import audit
from alerts.api import ESCALATE_AFTER_S, IncidentService
from alerts.lifecycle import TRANSITIONS
from alerts.store import Store
from citybrain.city import load_city
from citybrain.clock import ManualClock
from citybrain.exceptions import IllegalTransition, NotFound
from citybrain.records import Evidence, UnitStatus, Warning
from citybrain.settings import Settings
from tests.conftest import SHARED
from tests.ingest_helpers import TINY

CAP_XSD = xmlschema.XMLSchema(str(SHARED / "standards" / "cap" / "CAP-v1.2.xsd"))
T0 = 1_795_339_350.0


class Recorder:
    def __init__(self):
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic, payload, qos=1, retain=False):
        assert qos == 1
        self.sent.append((topic, payload))

    def caps(self, unit):
        return [p.decode() for t, p in self.sent if t == f"city/units/{unit}/dispatch"]


@pytest.fixture(scope="module")
def city():
    return load_city(TINY)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'incidents.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def svc(city, store_url, tmp_path):
    s = Settings().replace(data_dir=tmp_path, store_url=store_url)
    return IncidentService(s, city, clock=ManualClock(T0), publisher=Recorder())


def warning(wid="w1", event="flood", grid="G1", severity="Severe", t=T0 - 30, active=True, source="wl-0001",
            certainty="Likely", value=4.4):
    return Warning(id=wid, event=event, grid=grid, district="D1", location=(114.01, 22.51), t=t, started_at=t - 20,
                   score=0.8, severity=severity, certainty=certainty, urgency="Immediate", detector="static_limit",
                   explanation="water level 4.4 m above alarm 4.0 m", active=active,
                   evidence=(Evidence(source, "water_level", t, value, "above alarm"),))


def test_warning_opens_incident_published_and_audited(svc):
    inc = svc.handle_warning(warning())
    assert inc.event == "flood" and inc.area == "G1" and inc.district == "D1" and inc.state == "new"
    assert inc.category == "Met" and inc.severity == "Severe"
    assert inc.started_at == T0 - 50 and inc.detected_at == T0
    topic, payload = svc.publisher.sent[-1]
    assert topic == f"city/alerts/{inc.id}"
    assert svc.get(inc.id).to_dict()["evidence"][0]["source"] == "wl-0001"
    assert audit.verify(svc.store).ok


def test_same_warning_twice_changes_nothing(svc):
    svc.handle_warning(warning())
    n = len(svc.publisher.sent)
    assert svc.handle_warning(warning()) is None
    assert len(svc.publisher.sent) == n and len(svc.list_incidents("all")) == 1


def test_warnings_in_same_and_neighbouring_grid_merge(svc):
    a = svc.handle_warning(warning())
    b = svc.handle_warning(warning("w2", grid="G2", severity="Extreme", source="rf-0001", certainty="Observed"))
    assert a.id == b.id and len(svc.list_incidents("all")) == 1
    assert b.severity == "Extreme" and b.certainty == "Observed"
    assert {e.source for e in b.evidence} == {"wl-0001", "rf-0001"}
    # another event type in the same grid is another incident
    c = svc.handle_warning(warning("w3", event="fire", source="sm-0001"))
    assert c.id != a.id


def test_incident_ids_are_deterministic(city, tmp_path):
    ids = []
    for k in range(2):
        s = Settings().replace(data_dir=tmp_path / str(k))
        ids.append(IncidentService(s, city, clock=ManualClock(T0)).handle_warning(warning()).id)
    assert ids[0] == ids[1]


def test_lone_minor_warning_needs_to_repeat(svc):
    assert svc.handle_warning(warning("m1", severity="Minor")) is None
    inc = svc.handle_warning(warning("m2", severity="Minor", t=T0 - 10))
    assert inc is not None and inc.severity == "Minor"


def test_back_to_normal_proposes_resolution(svc):
    inc = svc.handle_warning(warning())
    back = svc.handle_warning(warning(active=False, t=T0))  # same id, now inactive
    assert back.id == inc.id and back.history[-1].action == "propose_resolve"
    assert back.state == "new"  # a proposal, the operator decides


def test_full_lifecycle_with_dispatch_cap_and_unit_reports(svc):
    inc = svc.handle_warning(warning())
    svc.act(inc.id, "acknowledge", "alice", note="seen")
    sug = svc.suggest_units(inc.id)
    assert sug and sug[0]["type"] == "rescue"  # flood -> rescue first
    d = svc.act(inc.id, "dispatch", "alice")
    unit = sug[0]["id"]
    assert d.state == "dispatched" and d.units == (unit,)
    caps = svc.publisher.caps(unit)
    assert len(caps) == 1
    CAP_XSD.validate(caps[0])
    root = ET.fromstring(caps[0])
    ns = {"c": "urn:oasis:names:tc:emergency:cap:1.2"}
    assert root.find("c:msgType", ns).text == "Alert" and root.find("c:addresses", ns).text == unit
    assert next(u for u in svc.units() if u["id"] == unit)["state"] == "en_route"
    with pytest.raises(IllegalTransition, match="not available"):
        svc.act(inc.id, "dispatch", "alice", unit=unit)
    on = svc.handle_unit_status(UnitStatus(unit=unit, state="on_scene", incident=inc.id, location=(114.01, 22.51), t=T0 + 5))
    assert on.state == "on_scene" and on.history[-1].actor == unit
    r = svc.act(inc.id, "resolve", "bob", note="water receding")
    assert r.state == "resolved"
    update = svc.publisher.caps(unit)[-1]
    CAP_XSD.validate(update)
    assert ET.fromstring(update).find("c:msgType", ns).text == "Update"
    c = svc.act(inc.id, "close", "bob")
    assert c.state == "closed"
    assert [h.action for h in c.history] == ["raise", "acknowledge", "dispatch", "arrive", "resolve", "close"]
    assert [h.actor for h in c.history][1:] == ["alice", "alice", unit, "bob", "bob"]
    CAP_XSD.validate(svc.cap_xml(inc.id))
    perf = svc.performance()
    assert perf["overall"]["acknowledge"]["n"] == 1 and "D1" in perf["by_district"]
    assert audit.verify(svc.store).ok


def test_false_alarm_cancels_dispatch(svc):
    inc = svc.handle_warning(warning())
    svc.act(inc.id, "dispatch", "alice", unit="RESCUE-01")
    svc.act(inc.id, "false_alarm", "alice", note="sensor splashed")
    cancel = svc.publisher.caps("RESCUE-01")[-1]
    CAP_XSD.validate(cancel)
    assert "<msgType>Cancel</msgType>" in cancel.replace("ns0:", "") or ">Cancel<" in cancel
    assert next(u for u in svc.units() if u["id"] == "RESCUE-01")["incident"] is None


ALL_STATES = ("new", "acknowledged", "dispatched", "on_scene", "resolved", "closed", "escalated", "false_alarm", "merged")


@pytest.mark.parametrize("action", ["acknowledge", "resolve", "close", "false_alarm"])
def test_every_transition_is_legal_or_refused_clearly(svc, action):
    from alerts.lifecycle import next_state

    for state in ALL_STATES:
        if state in TRANSITIONS[action]:
            assert next_state(state, action) == TRANSITIONS[action][state]
        else:
            with pytest.raises(IllegalTransition, match=f"that is {state}"):
                next_state(state, action)


def test_illegal_actions_through_the_service(svc):
    inc = svc.handle_warning(warning())
    with pytest.raises(IllegalTransition, match="cannot close an incident that is new"):
        svc.act(inc.id, "close", "alice")
    with pytest.raises(IllegalTransition, match="unknown action"):
        svc.act(inc.id, "explode", "alice")
    with pytest.raises(NotFound):
        svc.act("INC-NOPE", "acknowledge", "alice")
    with pytest.raises(NotFound):
        svc.act(inc.id, "dispatch", "alice", unit="NAVY-1")
    assert svc.get(inc.id).state == "new"


def test_escalation_and_reminders_on_a_controlled_clock(svc):
    inc = svc.handle_warning(warning())
    clock = svc.clock
    clock.advance(ESCALATE_AFTER_S["Severe"] - 1)
    assert svc.tick() == []
    clock.advance(1)
    [esc] = svc.tick()
    assert esc.state == "escalated" and esc.history[-1].actor == "system"
    n = len(svc.publisher.sent)
    clock.advance(30)
    svc.tick()
    assert len(svc.publisher.sent) == n  # no reminder yet
    clock.advance(31)
    svc.tick()
    assert svc.publisher.sent[-1][0] == f"city/alerts/{inc.id}"  # reminder republished
    assert svc.act(inc.id, "acknowledge", "alice").state == "acknowledged"


def test_silences_suppress_matching_warnings(svc):
    svc.add_silence("device", "wl-0001", svc.clock.now() + 3600, "admin", "maintenance")
    assert svc.handle_warning(warning()) is None
    assert svc.list_incidents("all") == []
    assert svc.handle_warning(warning("w9", source="other-1")) is not None
    sil = svc.list_silences()
    assert len(sil) == 1
    svc.remove_silence(sil[0]["id"], "admin")
    assert svc.list_silences() == []
    with pytest.raises(ValueError):
        svc.add_silence("planet", "x", svc.clock.now() + 10, "admin")


def test_tampered_audit_log_is_pinpointed(svc):
    inc = svc.handle_warning(warning())
    svc.act(inc.id, "acknowledge", "alice")
    v = audit.verify(svc.store)
    assert v.ok and v.entries >= 3
    with svc.store.tx() as cur:
        cur.execute("UPDATE audit SET actor = ? WHERE seq = ?", ("mallory", 2))
    bad = audit.verify(svc.store)
    assert not bad.ok and bad.first_bad == 2 and "altered" in bad.problem


def test_deleted_audit_entry_is_pinpointed(svc):
    inc = svc.handle_warning(warning())
    svc.act(inc.id, "acknowledge", "alice")
    with svc.store.tx() as cur:
        cur.execute("DELETE FROM audit WHERE seq = ?", (2,))
    bad = audit.verify(svc.store)
    assert not bad.ok and bad.first_bad == 3 and "missing" in bad.problem


def test_concurrent_writers_never_lose_an_update(city, store_url, tmp_path):
    s = Settings().replace(data_dir=tmp_path, store_url=store_url)
    first = IncidentService(s, city, clock=ManualClock(T0))
    ids = [first.handle_warning(warning(f"c{k}", grid=g, event=e)).id
           for k, (g, e) in enumerate([("G1", "flood"), ("G4", "gas_leak"), ("G3", "fire"), ("G2", "noise")])]
    errors = []

    def worker(k):
        svc = IncidentService(s, city, clock=ManualClock(T0 + k))  # another process's service
        try:
            for inc_id in ids:
                try:
                    svc.act(inc_id, "acknowledge", f"op{k}")
                except IllegalTransition:
                    pass  # the other one acknowledged first: refused, not lost
                svc.handle_warning(warning(f"extra-{k}-{inc_id}", event=svc.get(inc_id).event,
                                           grid=svc.get(inc_id).area, source=f"dev-{k}"))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for inc_id in ids:
        inc = first.get(inc_id)
        assert inc.state == "acknowledged"
        assert [h.action for h in inc.history].count("acknowledge") == 1
        assert {"dev-0", "dev-1"} <= {e.source for e in inc.evidence}  # both merges kept
    assert audit.verify(Store(store_url)).ok


def test_flapping_is_detected(svc):
    titles = []
    for k in range(3):
        inc = svc.handle_warning(warning(f"f{k}", t=T0 - 30 + k * 100))
        titles.append(inc.title)
        svc.act(inc.id, "false_alarm", "alice")
        svc.clock.advance(60)
    assert "(flapping)" not in titles[1] and "(flapping)" in titles[2]
    assert svc.get(inc.id).history[1].action == "flapping"


def test_situation_that_outlives_its_closed_incident_opens_a_new_one(svc):
    """A fused warning keeps its id while its situation lasts: after a false alarm, a new source
    joining the same situation must open a second incident, not collide with the ended one."""
    first = svc.handle_warning(warning())
    svc.act(first.id, "false_alarm", "alice")
    joined = warning(source="wl-0002", value=4.6)  # same warning id, one more source
    second = svc.handle_warning(joined)
    assert second is not None and second.id != first.id and second.state == "new"
    assert svc.get(first.id).state == "false_alarm"
    assert [i.id for i in svc.list_incidents("open")] == [second.id]
    assert svc.handle_warning(joined) is None  # a redelivery changes nothing
    assert {i.id for i in svc.list_incidents("all")} == {first.id, second.id}


def silence(wid, grid, source, last, noticed, event="device_offline"):
    """A fused silence warning of one partition: one device, silent since ``last``."""
    return Warning(id=wid, event=event, grid=grid, district="D1", location=(114.01, 22.51), t=noticed,
                   started_at=last, score=0.6, severity="Moderate", certainty="Possible", urgency="Expected",
                   detector="fusion:silence", explanation=f"{source}: no reading since {last:.0f}", active=True,
                   evidence=(Evidence(source, "noise", noticed, None, "silence", started_at=last),))


def test_silences_from_several_partitions_at_once_are_a_power_outage(svc):
    """Each partition's fusion saw one silent device of an area (grids spread over partitions):
    the incident gathers them and becomes a power outage once three went silent at once, and a
    partition that already says power outage upgrades the incident instead of opening another."""
    a = svc.handle_warning(silence("p0", "G1", "n-1", T0 - 200, T0 - 20))
    b = svc.handle_warning(silence("p1", "G2", "n-2", T0 - 190, T0 + 10))
    assert a.id == b.id and b.event == "device_offline"
    c = svc.handle_warning(silence("p2", "G3", "n-3", T0 - 150, T0 + 100))
    assert (c.id, c.event, c.category) == (a.id, "power_outage", "Infra") and c.title.startswith("Power Outage")
    assert (c.severity, c.certainty) == ("Extreme", "Observed")  # as fusion rates three silent sources at 0.6
    assert "3 devices went silent at once" in c.history[-1].note
    d = svc.handle_warning(silence("p3", "G4", "n-4", T0 - 100, T0 + 150))  # joins the power outage
    assert d.id == a.id and len(d.evidence) == 4
    assert [i.event for i in svc.list_incidents("all")] == ["power_outage"]
    up = svc.handle_warning(silence("q0", "G1", "m-1", T0 + 9000, T0 + 9100))
    assert up.id != a.id and up.event == "device_offline"
    up = svc.handle_warning(silence("q1", "G2", "m-2", T0 + 9010, T0 + 9200, event="power_outage"))
    assert (up.id, up.event) == (up.id, "power_outage") and len(svc.list_incidents("all")) == 2


def test_devices_that_went_silent_hours_apart_stay_device_trouble(svc):
    for k in range(3):  # one incident (within its merge window), but begun 25 minutes apart
        inc = svc.handle_warning(silence(f"p{k}", f"G{k + 1}", f"n-{k}", T0 + 1500 * k, T0 + 1500 * k + 300))
    assert inc.event == "device_offline" and len(inc.evidence) == 3
