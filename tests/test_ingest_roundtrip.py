"""Every payload kind round-trips MQTT -> ingest process -> Kafka, on Mosquitto and on amqtt;
a corpus of bad messages is rejected reason by reason while good messages keep flowing."""

from __future__ import annotations

import base64
import json
import time

import pytest

from citybrain.city import load_city
from ingest.edge import Edge
from simulators.bad_messages import corpus
from tests.ingest_helpers import TINY, consume, publisher, start_ingest, stats


def good_messages(now: float) -> list[tuple[str, bytes]]:
    def pack(dev, kind, unit, vals):
        return json.dumps([{"bn": f"{dev}:", "bt": now - 60, "n": kind, "u": unit, "v": vals[0]}] +
                          [{"t": 10 * i, "v": v} for i, v in enumerate(vals[1:], 1)]).encode()

    event = {"type": "new", "before": {}, "after": {
        "id": "1700000000.1-abc", "camera": "cam-0042", "label": "fire", "score": 0.91, "top_score": 0.91,
        "start_time": now - 5, "end_time": None, "current_zones": ["gate"], "box": [1, 2, 30, 40],
        "recognized_license_plate": "粤B12345"}}
    return [
        ("city/sensors/wl-0001", pack("wl-0001", "water_level", "m", [1.1, 1.2, 1.3])),
        ("city/sensors/aq-0007", pack("aq-0007", "pm25", "ug/m3", [30.0])),
        ("city/sensors/gs-0001", json.dumps([{"n": "gas", "u": "%LEL", "v": 1.5, "t": now - 5}]).encode()),
        ("city/cameras/cam-0042/events", json.dumps(event).encode()),
        ("city/cameras/cam-0042/person", b"17"),
        ("city/devices/sm-0001/status", b"offline"),
        ("city/units/FIRE-07/status", json.dumps({"state": "en_route", "incident": "INC-1",
                                                  "location": [114.01, 22.51], "t": now}).encode()),
    ]


def bad_corpus(now: float) -> list[tuple[str, bytes, str]]:
    return corpus(load_city(TINY), now)


@pytest.fixture(params=["mosquitto", "amqtt"])
def ingest_settings(request, settings):
    if request.param == "amqtt":
        host, port = request.getfixturevalue("amqtt")
        settings = settings.replace(mqtt_url=f"mqtt://{host}:{port}", mqtt_protocol="3.1.1")
    return settings.replace(city_file=TINY)


def test_every_payload_kind_round_trips_into_kafka(ingest_settings, tmp_path):
    s = ingest_settings
    proc = start_ingest(s, tmp_path / "ingest.log")
    pub = publisher(s)
    try:
        for topic, payload in good_messages(time.time()):
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        batches = consume(s, "signals", lambda out: sum(len(b["t"]) for b in out) >= 5
                          and sum(len(b["events"]) for b in out) >= 3)
        units = consume(s, "units", lambda out: len(out) >= 1)
    finally:
        pub.disconnect()
        proc.terminate()
        assert proc.wait(20) == 0
    readings = [(d, n, g, v) for b in batches for d, n, g, v in zip(b["device"], b["name"], b["grid"], b["value"])]
    assert ("wl-0001", "water_level", "G1", 1.3) in readings and ("aq-0007", "pm25", "G2", 30.0) in readings
    assert ("gs-0001", "gas", "G4", 1.5) in readings  # no bn: the topic names the device
    assert len({i for b in batches for i in b["ids"]}) == 5
    events = {e["type"]: e for b in batches for e in b["events"]}
    assert events["camera_event"]["label"] == "fire" and events["camera_event"]["grid"] == "G3"
    # licence plates never travel in clear
    assert "粤B12345" not in json.dumps(batches, ensure_ascii=False)
    assert events["camera_event"]["attributes"][0][1].startswith("h:")
    assert events["camera_count"]["count"] == 17
    assert events["presence"]["online"] is False and events["presence"]["device"] == "sm-0001"
    assert units[0]["unit"] == "FIRE-07" and units[0]["state"] == "en_route" and units[0]["location"] == [114.01, 22.51]


def test_bad_corpus_rejected_reason_by_reason_while_good_flows(settings, tmp_path):
    s = settings.replace(city_file=TINY)
    proc = start_ingest(s, tmp_path / "ingest.log")
    pub = publisher(s)
    now = time.time()
    corpus = bad_corpus(now)
    assert len(corpus) >= 40
    try:
        for k, (topic, payload, _) in enumerate(corpus):
            pub.publish(topic, payload, qos=1)
            good = json.dumps([{"bn": "aq-0007:", "bt": now - k, "n": "pm25", "u": "ug/m3", "v": float(k)}])
            pub.publish("city/sensors/aq-0007", good, qos=1).wait_for_publish(5)
        dead = consume(s, "deadletter", lambda out: len(out) >= len(corpus))
        batches = consume(s, "signals", lambda out: sum(len(b["t"]) for b in out) >= len(corpus))
    finally:
        pub.disconnect()
        proc.terminate()
        proc.wait(20)
    # the dead-letter topic is partitioned: compare as sets of (topic, raw bytes, reason); the raw
    # bytes are kept as sent except that licence plates and faces are replaced by keyed hashes
    edge = Edge(load_city(TINY), s)
    got = sorted((d["topic"], base64.b64decode(d["payload_b64"]), d["reason"]) for d in dead)
    assert got == sorted((t, edge.scrub(p), r) for t, p, r in corpus), "each bad message kept with its reason"
    for private in ("粤B99999", "Zhang Wei"):
        assert private not in json.dumps(dead, ensure_ascii=False) + (s.data_dir / "deadletter.jsonl").read_text()
        assert private not in json.dumps(stats(s)["recent_rejects"], ensure_ascii=False)
    assert any(b"h:" in base64.b64decode(d["payload_b64"]) and b"recognized_license_plate" in
               base64.b64decode(d["payload_b64"]) for d in dead)
    assert all(d["detail"] for d in dead)
    values = sorted(v for b in batches for v in b["value"])
    assert values == [float(k) for k in range(len(corpus))], "every good message arrived"
    st = stats(s)
    assert st["rejected"] == len(corpus) and st["accepted"] == len(corpus)
    assert st["rejected_by_reason"]["bad_json"] == 3
    assert st["rejected_by_device"]["wl-0001"] >= 20
    assert len(st["recent_rejects"]) > 0
    kept = (s.data_dir / "deadletter.jsonl").read_text().splitlines()
    assert len(kept) == len(corpus)


def test_duplicates_are_dropped_by_identity(settings, tmp_path):
    s = settings.replace(city_file=TINY)
    proc = start_ingest(s, tmp_path / "ingest.log")
    pub = publisher(s)
    now = time.time()
    msg = json.dumps([{"bn": "wl-0001:", "bt": now, "n": "water_level", "u": "m", "v": 2.0}])
    try:
        for _ in range(3):
            pub.publish("city/sensors/wl-0001", msg, qos=1).wait_for_publish(5)
        dead = consume(s, "deadletter", lambda out: len(out) >= 2)
    finally:
        pub.disconnect()
        proc.terminate()
        proc.wait(20)
    assert [d["reason"] for d in dead] == ["duplicate", "duplicate"]
