"""The demo city's power-outage scenario through the real parser, stream core and incident
service (no brokers): the silenced devices sit in grids that ingest keys to different
partitions, so no single partition's fusion sees the whole outage; the incident must."""

from __future__ import annotations

from collections import defaultdict

from alerts.api import IncidentService
from citybrain.clock import ManualClock
from citybrain.exceptions import RejectedMessage
from citybrain.kafka import partition_for
from citybrain.records import CameraCount, CameraEvent, Presence, Reading, SignalBatch
from citybrain.settings import Settings
from ingest.edge import Edge
from simulators.feed import Feed
from simulators.scenarios import suite
from streams.core import StreamCore

T0 = 1_795_339_200.0
SPAN_S = 1200.0  # the outage starts at 300 s (the devices' cadences are known by then)


def batches(city, settings, messages, every_s=30.0):
    """Ingest's batching: the readings and events of ``every_s`` of feed, per partition."""
    edge = Edge(city, settings, ManualClock(T0 + SPAN_S))
    cut, cols, events = T0, defaultdict(lambda: defaultdict(list)), defaultdict(list)
    for m in messages:
        if m.t >= cut + every_s:
            yield from _flush(cols, events)
            cut = m.t
        try:
            records = edge.parse(m.topic, m.payload).records
        except RejectedMessage:  # the feed's deliberate duplicates: ingest dead-letters them
            continue
        for r in records:
            p = partition_for(r.grid, settings.partitions)
            if isinstance(r, Reading):
                for k in ("device", "name", "grid", "t", "value"):
                    cols[p][k].append(getattr(r, k))
                cols[p]["ids"].append(r.id)
            elif isinstance(r, (CameraEvent, CameraCount, Presence)):
                events[p].append(r.to_dict())
    yield from _flush(cols, events)


def _flush(cols, events):
    for p in sorted(set(cols) | set(events)):
        c = cols.get(p, {})
        yield p, SignalBatch(*(tuple(c.get(k, ())) for k in ("device", "name", "grid", "t", "value", "ids")),
                             events=tuple(events.get(p, ())))
    cols.clear()
    events.clear()


def test_a_power_outage_across_partitions_becomes_one_power_outage_incident(demo_city, tmp_path):
    settings = Settings().replace(data_dir=tmp_path, partitions=4)
    [scenario] = suite(demo_city, "power_outage", 600.0)  # silent 10 minutes: past every deadline
    feed = Feed(demo_city, T0, scenarios=[scenario], duration=SPAN_S)
    core = StreamCore(settings, demo_city, ManualClock(T0))
    svc = IncidentService(settings, demo_city, clock=ManualClock(T0 + SPAN_S))
    offline_by_partition: dict[int, set[str]] = defaultdict(set)
    for p, batch in batches(demo_city, settings, feed):
        for w in core.process(p, batch).warnings:
            if w.event in ("device_offline", "power_outage") and w.active:
                offline_by_partition[p] |= {e.source for e in w.evidence}
            svc.handle_warning(w)
    truth = scenario.truth(feed.start)
    silenced = set(truth["devices"])
    assert len([p for p, s in offline_by_partition.items() if s & silenced]) >= 2  # the outage is split
    near = {truth["grid"]} | set(demo_city.neighbours[truth["grid"]])
    [inc] = [i for i in svc.list_incidents("all") if i.event in ("device_offline", "power_outage") and i.area in near]
    assert inc.event == "power_outage" and inc.severity in ("Severe", "Extreme")
    assert len({e.source for e in inc.evidence} & silenced) >= 3
    assert abs(inc.started_at - (T0 + scenario.start)) <= 120
