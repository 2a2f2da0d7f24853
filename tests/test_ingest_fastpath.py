"""ingest's hot path without brokers: BurstClient's in-buffer packet parser against paho's own
reader (the path every packet took before it), and the edge's orjson decoding against the stdlib
(same value or same rejection, whatever the bytes)."""

from __future__ import annotations

import json
import struct

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import MQTTErrorCode

from citybrain.exceptions import RejectedMessage
from citybrain.records import Reading, message_id
from ingest.burst_client import READ_SIZE, BurstClient
from ingest.edge import Edge, loads

PINGRESP = b"\xd0\x00"


class PahoPath(BurstClient):
    """The reference: every packet through paho's ``_packet_read`` (the parser switched off)."""

    def _read_publishes(self) -> MQTTErrorCode:
        return MQTTErrorCode.MQTT_ERR_SUCCESS


class ChunkSocket:
    """A socket whose peer sends ``chunks`` one at a time: recv() drains the current one, then
    says "would block" until the test lets the next one arrive (a new select() wake-up)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.current = list(chunks), b""

    def arrive(self) -> bool:
        if not self.chunks:
            return False
        self.current += self.chunks.pop(0)
        return True

    def recv(self, n: int) -> bytes:
        if not self.current:
            raise BlockingIOError
        data, self.current = self.current[:n], self.current[n:]
        return data

    def close(self) -> None:
        pass


def _frame(header: int, body: bytes) -> bytes:
    out, n = bytearray([header]), len(body)
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


def publish(topic: str, payload: bytes, qos: int, mid: int, v5: bool, props: bytes = b"") -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + (struct.pack("!H", mid) if qos else b"")
    if v5:
        body += bytes([len(props)]) + props
    return _frame(0x30 | qos << 1, body + payload)


def suback(mid: int, v5: bool) -> bytes:
    return _frame(0x90, struct.pack("!H", mid) + (b"\x00" if v5 else b"") + b"\x01")


def run(cls: type[BurstClient], chunks: list[bytes], v5: bool) -> dict:
    """Feeds ``chunks`` to a client of ``cls``, one wake-up after each arrival (and more while
    the client leaves data unread); what it delivered and how it ended."""
    c = cls(paho.CallbackAPIVersion.VERSION2, client_id="fast", manual_ack=True,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
    got: list[tuple] = []
    subacks: list[int] = []
    c.on_raw_message = lambda mid, qos, topic, payload: got.append((mid, qos, topic, payload))
    c.on_subscribe = lambda client, userdata, mid, *a: subacks.append(mid)
    c._ping_t = 1.0  # a PINGREQ is out
    c._last_bytes_received = 0.0
    c._sock = sock = ChunkSocket(chunks)
    rc = MQTTErrorCode.MQTT_ERR_SUCCESS
    while sock.arrive() or sock.current or c._buffered():
        rc = c.loop_read()
        if rc:
            break
    return {"got": got, "subacks": subacks, "rc": rc, "ping_answered": c._ping_t == 0,
            "between_packets": c._in_packet["command"] == 0, "bytes_seen": c._last_bytes_received > 0}


def mixed_wire(v5: bool) -> tuple[bytes, list[tuple]]:
    """PUBLISHes of 1-, 2- and 3-byte remaining lengths, QoS 0 and 1, with a PINGRESP and a
    SUBACK between them; and the (mid, qos, topic, payload) a receiver must get."""
    msgs = [("city/sensors/wl-00001", b'[{"v":1.0}]', 1, 1), ("a/b", b"", 0, 0),
            ("city/sensors/long", b"x" * 200, 1, 2),  # 2-byte remaining length
            ("t", bytes(range(256)) * 65, 1, 65535),  # 3-byte remaining length (16,640 + header)
            ("city/\u00e9t\u00e9", b"\xff\x00", 0, 0), ("z", b"last", 1, 3)]
    packets = [publish(t, p, q, m, v5, props=b"\x01\x01" if v5 and k == 2 else b"")
               for k, (t, p, q, m) in enumerate(msgs)]
    packets[1:1] = [PINGRESP]
    packets[4:4] = [suback(77, v5)]
    return b"".join(packets), [(m, q, t, p) for t, p, q, m in msgs]


@pytest.mark.parametrize("v5", [True, False])
def test_one_buffer_of_publishes_pingresp_and_suback_is_read_as_paho_reads_it(v5):
    wire, expected = mixed_wire(v5)
    fast = run(BurstClient, [wire], v5)
    assert fast == run(PahoPath, [wire], v5)
    assert fast == {"got": expected, "subacks": [77], "rc": 0, "ping_answered": True,
                    "between_packets": True, "bytes_seen": True}


@pytest.mark.parametrize("v5", [True, False])
def test_packets_cut_at_every_byte_boundary_are_read_whole(v5):
    wire, expected = mixed_wire(v5)
    head = b"".join(publish(t, p, q, m, v5) for m, q, t, p in expected if len(p) < 1000)
    head = PINGRESP + head + suback(5, v5)
    want = [e for e in expected if len(e[3]) < 1000]
    for cut in range(1, len(head)):  # every split of one wire into two reads
        r = run(BurstClient, [head[:cut], head[cut:]], v5)
        assert (r["got"], r["subacks"], r["rc"], r["ping_answered"], r["between_packets"]) == \
            (want, [5], 0, True, True), cut
    # every byte its own read (each boundary at once), and reads of every size up to 40 bytes
    for size in [1, *range(2, 41)]:
        r = run(BurstClient, [wire[k:k + size] for k in range(0, len(wire), size)], v5)
        assert r["got"] == expected and r["subacks"] == [77] and r["rc"] == 0, size


def test_a_packet_cut_at_a_full_buffers_end_waits_in_paho_and_completes():
    v5 = True
    packets = [publish("city/x", bytes([k % 251]) * (900 + k), 1, k + 1, v5) for k in range(200)]
    wire = b"".join(packets)
    assert len(wire) > 2 * READ_SIZE
    fast = run(BurstClient, [wire], v5)
    assert fast == run(PahoPath, [wire], v5)
    assert [p for *_, p in fast["got"]] == [bytes([k % 251]) * (900 + k) for k in range(200)]


MALFORMED = {
    "empty topic": lambda v5: _frame(0x32, b"\x00\x00\x00\x01" + (b"\x00" if v5 else b"") + b"p"),
    "topic past the packet": lambda v5: _frame(0x32, b"\x00\x09city"),
    "no packet id": lambda v5: _frame(0x32, b"\x00\x01a"),
    "properties past the packet": lambda v5: _frame(0x32, b"\x00\x01a\x00\x01\x09ab"),
    "5-byte properties length": lambda v5: _frame(0x32, b"\x00\x01a\x00\x01\xff\xff\xff\xff\x01"),
    "QoS 3": lambda v5: _frame(0x36, b"\x00\x01a\x00\x01" + (b"\x00" if v5 else b"") + b"p"),
    "5-byte remaining length": lambda v5: b"\x30\xff\xff\xff\xff\x01",
    "unknown packet type": lambda v5: b"\xf0\x00",
}


@pytest.mark.parametrize("what", sorted(MALFORMED))
@pytest.mark.parametrize("v5", [True, False])
def test_a_malformed_packet_drops_the_connection_after_what_came_before_it(what, v5):
    bad = MALFORMED[what](v5)
    if what in ("properties past the packet", "5-byte properties length") and not v5:
        pytest.skip("MQTT 3.1.1 has no properties")
    before = [publish("city/ok", b"1", 1, 1, v5), publish("city/ok", b"2", 0, 0, v5)]
    wire = b"".join(before) + bad + publish("city/after", b"3", 1, 2, v5)
    fast = run(BurstClient, [wire], v5)
    assert fast == run(PahoPath, [wire], v5)  # as before the parser: the same error, the same point
    assert fast["rc"] == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert [p for *_, p in fast["got"]] == [b"1", b"2"]


packet = st.one_of(
    st.tuples(st.just("pub"), st.text(min_size=1, max_size=30), st.binary(max_size=300) | st.just(b"y" * 20000),
              st.sampled_from([0, 1]), st.integers(1, 65535)),
    st.just(("ping",)), st.tuples(st.just("suback"), st.integers(1, 65535)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet, max_size=25), st.booleans(), st.sampled_from(list(MALFORMED) + [None]),
       st.lists(st.integers(1, 70_000), min_size=1, max_size=8))
def test_any_stream_cut_anywhere_reads_as_paho_reads_it(items, v5, bad, cuts):
    parts = []
    for it in items:
        if it[0] == "pub":
            parts.append(publish(it[1], it[2], it[3], it[4], v5))
        else:
            parts.append(PINGRESP if it[0] == "ping" else suback(it[1], v5))
    if bad and (v5 or "properties" not in bad):
        parts.append(MALFORMED[bad](v5))
    wire = b"".join(parts)
    chunks, pos = [], 0
    for k in cuts:
        chunks.append(wire[pos:pos + k])
        pos += k
    chunks.append(wire[pos:])
    chunks = [c for c in chunks if c]
    assert run(BurstClient, chunks, v5) == run(PahoPath, chunks, v5)


# --------------------------------------------------------------------------- the edge's JSON


def _stdlib(payload: bytes) -> str:
    """What the stdlib makes of the payload, type-exact (repr tells 1 from 1.0 from True, -0.0
    from 0.0; a dict's key order shows), or its error."""
    try:
        return repr(json.loads(payload))
    except (ValueError, UnicodeDecodeError) as e:
        return f"{type(e).__name__}: {e}"
    except RecursionError:
        return "RecursionError"


def _ours(payload: bytes) -> str:
    try:
        return repr(loads(payload))
    except (ValueError, UnicodeDecodeError) as e:
        return f"{type(e).__name__}: {e}"
    except RecursionError:
        return "RecursionError"


EDGE_CASES = [b"NaN", b"[Infinity, -Infinity]", b"1e400", b"-1e400", b'{"v": 1e999}', b"18446744073709551615",
              b"18446744073709551616", b"-9223372036854775808", b"-9223372036854775809", b"1" * 30,
              b"[" + b"9" * 5000 + b"]", b"0." + b"3" * 400, b"-0", b"-0.0", b"0e0", b'{"a":1,"b":2,"a":3}',
              b'"\\ud83d"', b'"\\ud83d\\ude00"', b'"\xed\xa0\x80"', b"\xef\xbb\xbf[1]", "[1]".encode("utf-16"),
              "[1]".encode("utf-32-le"), b"[1]\x00", b"\xfc", b"", b" ", b'"\t"', b"[1,]", b"'a'", b"[1] [2]",
              b"[" * 600 + b"]" * 600, b"[" * 1010 + b"]" * 1010, b"[" * 1030 + b"]" * 1030, b'{"a":' * 700 + b"1" + b"}" * 700,
              b"4.9e-324", b"2.4703282292062328e-324", b"1.7976931348623157e308", b"123456789012345678",
              b'[{"bn":"wl-00001:","bt":1796237695.1235,"n":"water_level","u":"m","v":1.0}]']


@pytest.mark.parametrize("payload", EDGE_CASES)
def test_json_decoding_gives_the_stdlib_value_or_error(payload):
    assert _ours(payload) == _stdlib(payload)


_json_alphabet = st.sampled_from([b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"u", b"d8", b"00", b"e", b"E",
                                  b"-", b"+", b".", b"0", b"1", b"9" * 10, b" ", b"\n", b"\t", b"true", b"null",
                                  b"NaN", b"Infinity", b'"a"', b"\xc3\xa9", b"\xff", b"\x00", b"1e308", b"x"])


@settings(max_examples=600, deadline=None)
@given(st.lists(_json_alphabet, max_size=40).map(b"".join) | st.binary(max_size=60))
def test_any_bytes_decode_as_the_stdlib_decodes_them(payload):
    assert _ours(payload) == _stdlib(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(json_values, st.booleans())
def test_any_json_document_decodes_as_the_stdlib_decodes_it(value, ascii_only):
    payload = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")
    assert _ours(payload) == _stdlib(payload)


def test_the_edge_rejects_bad_json_with_the_stdlib_message():
    for payload in [b"[1,]", b"\xfc", b'{"v": nope}']:
        try:
            json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            detail = f"not JSON: {e}"
        with pytest.raises(RejectedMessage) as got:
            Edge._json(payload, "wl-00001")
        assert (got.value.reason, got.value.detail) == ("bad_json", detail)


@given(st.text(), st.text(), st.floats())
def test_a_readings_id_is_its_message_id(device, name, t):
    r = Reading(device=device, name=name, t=t)
    assert r.id == message_id(device, name, repr(t))
