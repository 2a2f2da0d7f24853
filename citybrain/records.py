"""Typed records that cross a process boundary (Kafka, MQTT, the stores, the API).

Every record is a frozen, slotted dataclass validated once at the edge (ingest for what comes
from devices). ``to_dict``/``from_dict`` give the JSON shape; ``encode``/``decode`` give bytes.
Readings travel as :class:`SignalBatch`: columnar arrays (one Kafka record carries many
readings) so the stream stage can work on them with numpy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    """Mixin giving JSON (de)serialisation to the frozen dataclasses below."""

    kind: ClassVar[str] = "record"
    #: field name -> converter applied to that field's JSON value by ``from_dict``
    decoders: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        d["type"] = self.kind
        return d

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        dec = cls.decoders
        kwargs = {k: (dec[k](v) if k in dec else _tuples(v)) for k, v in d.items() if k in names}
        return cls(**kwargs)

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def decode(cls: type[R], data: bytes | str) -> R:
        return cls.from_dict(json.loads(data))


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, Record):
        return v.to_dict()
    return v


def _tuples(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v


def message_id(*parts: object) -> str:
    """A stable identity for de-duplication: the same reading always gets the same id."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=10)
    return h.hexdigest()


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Reading(Record):
    """One resolved sensor reading (SenML record after base-value rules)."""

    kind: ClassVar[str] = "reading"
    device: str
    name: str  # the measured quantity (sensor kind), SenML "n" after the base name
    t: float  # event time, epoch seconds
    value: float | None = None  # numeric value "v"
    unit: str = ""
    grid: str = ""
    vs: str | None = None  # string value
    vb: bool | None = None  # boolean value
    vd: str | None = None  # data value (base64)
    sum: float | None = None  # SenML "s"

    @property
    def id(self) -> str:
        # message_id(self.device, self.name, repr(self.t)) spelt out (ingest computes it per reading)
        return hashlib.blake2b(f"{self.device}\x1f{self.name}\x1f{self.t!r}".encode(), digest_size=10).hexdigest()


@dataclass(frozen=True, slots=True)
class CameraEvent(Record):
    """A Frigate-style tracked-object event, flattened to what the detectors need."""

    kind: ClassVar[str] = "camera_event"
    camera: str
    phase: str  # new | update | end
    object_id: str
    label: str
    score: float
    top_score: float
    t: float  # event time: end_time for "end", else the latest known time
    start_time: float
    end_time: float | None = None
    zones: tuple[str, ...] = ()
    box: tuple[float, ...] = ()
    grid: str = ""
    attributes: tuple[tuple[str, str], ...] = ()  # e.g. (("plate", "<keyed hash>"),)

    @property
    def id(self) -> str:
        return message_id(self.camera, self.object_id, self.phase, repr(self.t), repr(self.score))


@dataclass(frozen=True, slots=True)
class CameraCount(Record):
    """Frigate count topic: how many objects of ``label`` a camera sees now."""

    kind: ClassVar[str] = "camera_count"
    camera: str
    label: str
    count: int
    t: float  # receive time (the count topics carry no time)
    grid: str = ""


@dataclass(frozen=True, slots=True)
class Presence(Record):
    """Device presence (``online``/``offline``), retained, set as the device's last will."""

    kind: ClassVar[str] = "presence"
    device: str
    online: bool
    t: float
    grid: str = ""


@dataclass(frozen=True, slots=True)
class UnitStatus(Record):
    """What an emergency unit reports about itself."""

    kind: ClassVar[str] = "unit_status"
    unit: str
    state: str
    incident: str | None
    location: tuple[float, float] | None
    t: float


@dataclass(frozen=True, slots=True)
class DeadLetter(Record):
    """A message that could not be accepted, kept with the reason (never dropped silently)."""

    kind: ClassVar[str] = "dead_letter"
    topic: str
    reason: str
    detail: str
    payload_b64: str  # the raw bytes, base64
    received_at: float
    device: str | None = None
    stage: str = "ingest"


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True, slots=True)
class SignalBatch(Record):
    """What ingest produces to Kafka: columnar readings plus discrete events of one partition.

    Columns are parallel lists of equal length. ``events`` holds camera events, camera counts
    and presence records (as dicts with their ``type``). ``ids`` carries each reading's
    identity so that redelivered duplicates are dropped downstream.
    """

    kind: ClassVar[str] = "signal_batch"
    device: tuple[str, ...] = ()
    name: tuple[str, ...] = ()
    grid: tuple[str, ...] = ()
    t: tuple[float, ...] = ()
    value: tuple[float, ...] = ()
    ids: tuple[str, ...] = ()
    events: tuple[dict, ...] = ()
    produced_at: float = 0.0

    def __len__(self) -> int:
        return len(self.t) + len(self.events)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SignalBatch:
        return cls(
            device=tuple(d.get("device", ())),
            name=tuple(d.get("name", ())),
            grid=tuple(d.get("grid", ())),
            t=tuple(d.get("t", ())),
            value=tuple(d.get("value", ())),
            ids=tuple(d.get("ids", ())),
            events=tuple(d.get("events", ())),
            produced_at=float(d.get("produced_at", 0.0)),
        )

    def readings(self) -> list[Reading]:
        return [
            Reading(device=dv, name=n, t=t, value=v, grid=g)
            for dv, n, g, t, v in zip(self.device, self.name, self.grid, self.t, self.value)
        ]

    def typed_events(self) -> list[Record]:
        return [decode_record(e) for e in self.events]


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Evidence(Record):
    """One piece of evidence behind a warning or incident."""

    kind: ClassVar[str] = "evidence"
    source: str  # device or camera id
    source_kind: str  # sensor kind, or "camera"
    t: float
    value: float | None = None
    detail: str = ""  # e.g. label and score of a camera event, or "expected 1.2 m +- 0.1"
    started_at: float | None = None  # when what it shows began (a silence: the last reading)


def _evidence(items: Any) -> tuple[Evidence, ...]:
    return tuple(e if isinstance(e, Evidence) else Evidence.from_dict(e) for e in items)


@dataclass(frozen=True, slots=True)
class Warning_(Record):
    """A detector's (or the fusion's) judgement that something is wrong in a grid.

    ``id`` is deterministic (detector, source, start time) so that a replay, at any speed,
    produces the same warnings and a redelivered warning changes nothing downstream.
    ``active`` is False when the signal is back to normal (an auto-resolve proposal).
    """

    kind: ClassVar[str] = "warning"
    decoders: ClassVar[dict[str, Any]] = {"evidence": _evidence, "location": tuple}
    id: str
    event: str
    grid: str
    district: str
    location: tuple[float, float]
    t: float  # event time of the judgement
    started_at: float  # event time of the first evidence
    score: float  # [0, 1]
    severity: str  # CAP
    certainty: str  # CAP
    urgency: str  # CAP
    detector: str
    explanation: str
    evidence: tuple[Evidence, ...] = ()
    active: bool = True


Warning = Warning_  # noqa: A001 - the domain word; ``Warning_`` avoids shadowing in this module


@dataclass(frozen=True, slots=True)
class HistoryEntry(Record):
    kind: ClassVar[str] = "history"
    t: float
    actor: str
    action: str
    state: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Incident(Record):
    """An incident as the contract's JSON (CONTRACT section 3)."""

    kind: ClassVar[str] = "incident"
    decoders: ClassVar[dict[str, Any]] = {
        "evidence": _evidence,
        "location": tuple,
        "history": lambda items: tuple(
            h if isinstance(h, HistoryEntry) else HistoryEntry.from_dict(h) for h in items
        ),
    }
    id: str
    event: str
    category: str
    severity: str
    urgency: str
    certainty: str
    state: str
    area: str
    district: str
    location: tuple[float, float]
    started_at: float
    detected_at: float
    updated_at: float
    title: str = ""
    score: float = 0.0
    evidence: tuple[Evidence, ...] = ()
    units: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    warnings: tuple[str, ...] = ()  # ids of the warnings merged into it
    version: int = 0

    def replace(self, **changes: Any) -> Incident:
        return dataclasses.replace(self, **changes)


_BY_KIND: dict[str, type[Record]] = {
    c.kind: c
    for c in (Reading, CameraEvent, CameraCount, Presence, UnitStatus, DeadLetter, SignalBatch,
              Evidence, Warning_, HistoryEntry, Incident)
}


def decode_record(d: dict[str, Any] | bytes | str) -> Record:
    """Decode any record by its ``type`` field."""
    if not isinstance(d, dict):
        d = json.loads(d)
    return _BY_KIND[d["type"]].from_dict(d)


__all__ = [
    "CameraCount", "CameraEvent", "DeadLetter", "Evidence", "HistoryEntry", "Incident",
    "Presence", "Reading", "Record", "SignalBatch", "UnitStatus", "Warning", "decode_record",
    "message_id", "field",
]
