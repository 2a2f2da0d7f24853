"""Property-based: whatever arrives on whatever topic, the edge returns records or raises the
project's RejectedMessage, never anything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citybrain.city import load_city
from citybrain.clock import ManualClock
from citybrain.exceptions import RejectedMessage
from citybrain.settings import BUNDLED_CITY, Settings
from ingest.edge import Edge
from simulators.bad_messages import corpus
from tests.ingest_helpers import TINY

CITY = load_city(TINY)
T0 = 1_795_339_350.0

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
keys = st.sampled_from(["type", "before", "after", "id", "camera", "label", "score", "top_score", "start_time",
                        "end_time", "current_zones", "box", "frame_time", "state", "incident", "location", "t",
                        "bn", "bt", "n", "u", "v", "recognized_license_plate", "sub_label"])
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=8),
                           max_leaves=25)
topics = st.sampled_from(["city/sensors/wl-0001", "city/sensors/cam-0042", "city/sensors/zz", "city/cameras/cam-0042/events",
                          "city/cameras/cam-0042/person", "city/cameras/wl-0001/events", "city/devices/wl-0001/status",
                          "city/units/FIRE-07/status", "city/units/X/status", "city/alerts/INC-1", "city", "other/x",
                          "city/units/FIRE-07/dispatch", "city/sensors/wl-0001/a/b"])


def _payload(v) -> bytes:
    try:
        return json.dumps(v, allow_nan=True).encode()
    except (TypeError, ValueError):
        return b"\x00"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topics, json_values)
def test_edge_never_raises_anything_but_rejections(topic, value):
    edge = Edge(CITY, Settings(), ManualClock(T0))
    try:
        parsed = edge.parse(topic, _payload(value))
    except RejectedMessage as e:
        assert e.reason and e.detail
    else:
        assert all(r.to_dict() for r in parsed.records)


@settings(max_examples=200, deadline=None)
@given(topics, st.binary(max_size=300))
def test_edge_survives_arbitrary_bytes(topic, payload):
    edge = Edge(CITY, Settings(), ManualClock(T0))
    try:
        edge.parse(topic, payload)
    except RejectedMessage:
        pass


@pytest.mark.parametrize("city_file", [TINY, BUNDLED_CITY], ids=["tiny", "demo"])
def test_the_bad_message_corpus_is_refused_with_each_messages_own_reason(city_file):
    """Built for any city (the benchmark mixes it into the demo city's feed), one reason each."""
    city = load_city(city_file)
    edge = Edge(city, Settings(), ManualClock(T0))
    got = []
    for m in corpus(city, T0):
        with pytest.raises(RejectedMessage) as e:
            edge.parse(m.topic, m.payload)
        got.append(e.value.reason)
    want = [m.reason for m in corpus(city, T0)]
    assert got == want
    assert len(set(want)) >= 20  # the corpus covers the reasons, not one reason many times
