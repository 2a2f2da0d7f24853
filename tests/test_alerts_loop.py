"""The closed loop over real MQTT and Kafka: warning in -> incident on city/alerts -> dispatch
-> CAP at the unit -> unit reports on scene -> operator resolves and closes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
import xmlschema
from aiokafka import AIOKafkaProducer

from alerts.api import IncidentService
from alerts.publisher import MqttPublisher
from citybrain.city import load_city
from citybrain.records import Evidence, UnitStatus, Warning
from tests.conftest import SHARED
from tests.ingest_helpers import TINY, wait_for

pytestmark = pytest.mark.slow
CAP = xmlschema.XMLSchema(str(SHARED / "standards" / "cap" / "CAP-v1.2.xsd"))


def produce(settings, topic, records):
    async def go():
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka)
        await p.start()
        try:
            for r in records:
                await p.send_and_wait(settings.topic(topic), r.encode(), key=b"k")
        finally:
            await p.stop()
    asyncio.run(go())


def test_warning_to_closed_incident_over_mqtt_and_kafka(settings, tmp_path):
    s = settings.replace(city_file=TINY)
    from citybrain.kafka import ensure_topics

    ensure_topics(s)
    proc = subprocess.Popen([sys.executable, "-m", "alerts"], env={**os.environ, **s.to_env()},
                            stdout=open(tmp_path / "alerts.log", "wb"), stderr=subprocess.STDOUT)
    got: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    host, port = s.mqtt
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="loop-listener", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: (lock.acquire(), got.append((m.topic, m.payload)), lock.release())
    sub.connect(host, port)
    sub.subscribe([("city/alerts/#", 1), ("city/units/+/dispatch", 1)])
    sub.loop_start()
    pub = None
    try:
        wait_for(lambda: (s.run_dir / "alerts.json").exists())
        now = time.time()
        w = Warning(id="loop-w1", event="fire", grid="G3", district="D1", location=(114.01, 22.53), t=now - 5,
                    started_at=now - 30, score=0.95, severity="Extreme", certainty="Observed", urgency="Immediate",
                    detector="fusion", explanation="smoke 450 ppm + camera fire 0.92",
                    evidence=(Evidence("sm-0001", "smoke", now - 5, 450.0, "above alarm 300"),))
        produce(s, "warnings", [w, w])  # delivered twice: one incident

        def incident():
            with lock:
                for topic, p in got:
                    if topic.startswith("city/alerts/"):
                        return json.loads(p)
        inc = wait_for(incident)
        assert inc["event"] == "fire" and inc["area"] == "G3" and inc["state"] == "new"

        # the operator dispatches through the same facade the command center uses
        pub = MqttPublisher(s, "loop-operator")
        svc = IncidentService(s, load_city(TINY), publisher=pub)
        svc.act(inc["id"], "acknowledge", "alice")
        d = svc.act(inc["id"], "dispatch", "alice", unit="FIRE-07")
        assert d.state == "dispatched"
        cap = wait_for(lambda: next((p for t, p in list(got) if t == "city/units/FIRE-07/dispatch"), None))
        CAP.validate(cap.decode())
        assert inc["id"] in cap.decode()

        produce(s, "units", [UnitStatus(unit="FIRE-07", state="on_scene", incident=inc["id"],
                                        location=(114.01, 22.53), t=time.time())])
        wait_for(lambda: svc.get(inc["id"]).state == "on_scene")
        on_scene_msgs = wait_for(lambda: [json.loads(p) for t, p in list(got)
                                          if t == f"city/alerts/{inc['id']}" and json.loads(p)["state"] == "on_scene"])
        assert on_scene_msgs[-1]["history"][-1]["actor"] == "FIRE-07"
        svc.act(inc["id"], "resolve", "bob", note="fire out")
        closed = svc.act(inc["id"], "close", "bob")
        assert closed.state == "closed"
        assert len(svc.list_incidents("all")) == 1
        assert [h.action for h in closed.history] == ["raise", "acknowledge", "dispatch", "arrive", "resolve", "close"]
    finally:
        sub.loop_stop()
        sub.disconnect()
        if pub:
            pub.close()
        proc.terminate()
        assert proc.wait(20) == 0
