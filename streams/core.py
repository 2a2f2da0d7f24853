"""The pure processing core: SignalBatches in, Warnings and DeadLetters out.

No Kafka, no Faust, no wall clock except the injected one (used only to stamp dead letters):
the worker feeds it batches per partition and produces what it returns. Readings of one source
are handled strictly in arrival order and every detector is causal, so the same feed gives the
same warnings however it is cut into batches or paced (replay at 1x or 50x).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from citybrain.city import City
from citybrain.clock import Clock, WallClock
from citybrain.logs import truncate
from citybrain.records import CameraCount, CameraEvent, DeadLetter, Presence, SignalBatch, Warning, decode_record
from citybrain.settings import Settings
from streams.detectors.base import Finding
from streams.fusion import TIMELESS, GridFusion, Situation, situation_state
from streams.monitor import CAMERA_LABELS, Monitor, count_monitor, label_monitor, sensor_monitor
from streams.vector.bank import SensorBank
from streams.watermark import Watermark
from streams.windows import tumbling

log = logging.getLogger(__name__)

SWEEP_S = 10.0  # silence is checked each time the watermark enters a new tumbling window of this size
MAX_EXTRA_SOURCES = 10_000  # sources not in the city file that we still monitor (bounded)
#: reading ids remembered per partition for de-duplication: at least this many (the latest), at
#: most twice as many plus a batch (two generations of ids, see ``StreamCore._dedup``)
SEEN_IDS = 100_000
ENGINES = ("vector", "scalar")
#: vector engine: segments with fewer sensor readings than this are stepped on scalar twins of
#: the bank's rows (a bank round costs ~0.3 ms whatever its size; a scalar step ~15 us)
TWIN_BELOW = 20


@dataclass(slots=True)
class Output:
    warnings: list[Warning] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass(slots=True)
class PartitionState:
    """Everything the core keeps for one input partition (checkpointed together)."""

    watermark: Watermark
    fusion: GridFusion
    monitors: dict[str, Monitor] = field(default_factory=dict)
    grid_of: dict[str, str] = field(default_factory=dict)  # monitor key -> grid
    offline: dict[str, float] = field(default_factory=dict)  # device -> event time it went offline
    seen: set[str] = field(default_factory=set)  # reading ids of the current generation
    seen_before: set[str] = field(default_factory=set)  # and of the one before it
    swept: float = float("-inf")
    dirty: set[str] = field(default_factory=set)
    #: sources whose episode moved (pending, opened, closed): checkpoint them now, not at the
    #: next interval ("p" stands for the partition's own state: presence, fusion)
    urgent: set[str] = field(default_factory=set)
    #: vector engine: the sensor monitors ("d:" keys) as rows of one bank; ``monitors``, ``dirty``
    #: and ``urgent`` then hold only the camera monitors and "p", the sensors' flags are per row
    bank: SensorBank | None = None
    rows: dict[str, int] = field(default_factory=dict)  # "d:" key -> bank row
    row_keys: list[str] = field(default_factory=list)  # bank row -> "d:" key
    dirty_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    urgent_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    #: rows whose state lives in a scalar Monitor for now (stepped in small segments; exactly the
    #: bank's behaviour, handed back to the bank before the row's next bank round)
    twins: dict[int, Monitor] = field(default_factory=dict)
    #: fusion situations as checkpointed, one changelog key each: (grid, event) -> (situation,
    #: its creation rank); the rank puts them back in the fusion's order on restore
    situations: dict[tuple[str, str], tuple[Situation, int]] = field(default_factory=dict)
    next_rank: int = 0
    #: restored from a single "fusion" key (the format before per-situation keys): void it once
    legacy_fusion: bool = False
    #: no evidence in the fusion can expire while the watermark is at or below this: each live
    #: finding's source had reported by this minus ``expire_s`` (and sources' last times only grow)
    expiry_due: float = float("-inf")


class StreamCore:
    def __init__(self, settings: Settings, city: City, clock: Clock | None = None) -> None:
        self.settings, self.city = settings, city
        self.clock = clock or WallClock()
        self.topic = settings.topic("signals")
        self.utc_offset_s = _utc_offset(city.timezone)
        self.engine = getattr(settings, "streams_engine", "vector")
        if self.engine not in ENGINES:
            raise ValueError(f"streams_engine must be one of {ENGINES}, not {self.engine!r}")
        self.parts: dict[int, PartitionState] = {}
        self.counts = {"readings": 0, "events": 0, "warnings": 0, "late": 0, "too_late": 0, "duplicates": 0,
                       "bad_events": 0, "unmonitored": 0}
        self._extra = 0
        self.timing = {"process_s": 0.0, "checkpoint_s": 0.0}  # filled by the worker

    # ------------------------------------------------------------------ public

    def part(self, p: int) -> PartitionState:
        st = self.parts.get(p)
        if st is None:
            st = PartitionState(Watermark(self.settings.allowed_lateness_s, self.settings.grace_s),
                                GridFusion(self.city))
            if self.engine == "vector":
                st.bank = SensorBank(self.utc_offset_s)
            self.parts[p] = st
        return st

    def watermarks(self) -> dict[int, float]:
        return {p: st.watermark.value for p, st in self.parts.items() if st.watermark.max_t > float("-inf")}

    def process(self, partition: int, batch: SignalBatch) -> Output:
        st = self.part(partition)
        out = Output()
        t, v, keep = self._columns(st, batch, out)
        look = None  # vector engine: the batch's rows and device codes, made once for all segments
        events = self._stream_time(st, self._decode_events(batch, out))
        ev_t = np.array([float(ev.t) for _, ev in events], dtype=float)
        before = st.watermark.max_t
        late, too_late = st.watermark.classify(np.concatenate((np.where(keep, t, np.inf), ev_t)))
        timed = np.concatenate((t[keep], [e for e, (_, ev) in zip(ev_t, events)
                                          if not isinstance(ev, (CameraCount, Presence))]))
        st.watermark.max_t = max(before, float(timed.max()) if timed.size else before)  # arrival stamps never lead
        n = t.size
        self._dead_late(batch, t, v, keep & too_late[:n], st.watermark, out)
        for (raw, ev), bad in zip(events, too_late[n:].tolist()):
            if bad:
                out.dead_letters.append(self._dead(raw, "too_late", f"t={ev.t} watermark={st.watermark.value}",
                                                   getattr(ev, "camera", None) or getattr(ev, "device", None)))
        self.counts["late"] += int(late.sum())
        self.counts["too_late"] += int(too_late[:n][keep].sum() + too_late[n:].sum())
        ok_r = keep & ~too_late[:n]
        ok_e = [ev for (_, ev), bad in zip(events, too_late[n:].tolist()) if not bad]
        for r_mask, evs, wm in self._segments(st, before, t, ok_r, ok_e):
            found: list[tuple[Finding, str]] = []
            if st.bank is None:
                self._readings(st, batch, t, v, r_mask, found)
            else:
                if look is None:
                    look = _BatchRows(st, batch)
                self._readings_vec(st, batch, look, t, v, r_mask, found)
            self._events(st, evs, found)
            found.sort(key=lambda fg: (fg[0].t, fg[0].source, fg[0].detector))
            out.warnings += self._fuse(st, found)
            if wm is not None:
                out.warnings += self._sweep(st, wm)
        self.counts["warnings"] += len(out.warnings)
        return out

    def _stream_time(self, st: PartitionState, events: list) -> list:
        """Place counts and presence, which carry no event time, at the partition's stream time.

        Ingest stamps them with their arrival (wall) time. Judged as event time, that would
        push the watermark to "now" during a replay or a backfill and make every replayed
        reading too late. So they are moved to the newest event time known on the partition
        (never later than their stamp). While no event time is known at all they keep their
        stamp but do not move the watermark (see ``process``).
        """
        if not events:
            return events
        timed = [float(ev.t) for _, ev in events if not isinstance(ev, (CameraCount, Presence))]
        now = max([st.watermark.max_t, *timed])
        out = []
        for raw, ev in events:
            if isinstance(ev, (CameraCount, Presence)) and np.isfinite(now):
                ev = dataclasses.replace(ev, t=min(float(ev.t), now))
            out.append((raw, ev))
        return out

    def _segments(self, st: PartitionState, before: float, t: np.ndarray, ok_r: np.ndarray, evs: list):
        """Cut a batch where the watermark enters a new sweep window, as if events came one by one.

        Yields (reading mask, events, watermark to sweep at or None). Timers (silence, expiry)
        thus fire between the same events whatever the batching of a time-ordered feed.
        """
        r_idx = np.flatnonzero(ok_r)
        times = np.concatenate((t[r_idx], np.array([float(e.t) for e in evs], dtype=float)))
        if times.size == 0:
            return
        order = np.argsort(times, kind="stable")
        wm = np.maximum.accumulate(np.concatenate(([before], times[order])))[1:] - self.settings.allowed_lateness_s
        win = tumbling(wm, SWEEP_S)
        prev = np.concatenate(([st.swept], np.maximum.accumulate(win)[:-1]))
        ends = np.flatnonzero(win > np.maximum(prev, st.swept)).tolist()
        if not ends or ends[-1] != order.size - 1:
            ends.append(order.size - 1)
        lo = 0
        for hi in ends:
            mask = np.zeros(t.size, bool)
            sel = order[lo:hi + 1]
            mask[r_idx[sel[sel < r_idx.size]]] = True
            seg_evs = [evs[i - r_idx.size] for i in sel[sel >= r_idx.size].tolist()]
            crossed = bool(win[hi] > max(float(prev[hi]), st.swept))
            yield mask, seg_evs, (float(wm[hi]) if crossed else None)
            lo = hi + 1

    # ------------------------------------------------------------------ readings

    def _columns(self, st: PartitionState, b: SignalBatch, out: Output) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Times, values and the mask of readings worth judging (not duplicates, finite)."""
        n = len(b.t)
        lengths = {len(b.device), len(b.name), len(b.grid), n, len(b.value)} | ({len(b.ids)} if b.ids else set())
        try:
            if len(lengths) != 1:
                raise ValueError(f"columns of different lengths {sorted(lengths)}")
            t = np.asarray(b.t, dtype=float)
            v = np.asarray(b.value, dtype=float)
        except (TypeError, ValueError) as e:
            self.counts["bad_events"] += 1
            out.dead_letters.append(self._dead({"t": list(b.t)[:20], "device": list(b.device)[:20]}, "bad_batch",
                                               str(e), None))
            return np.zeros(0), np.zeros(0), np.zeros(0, bool)
        keep = np.ones(n, bool)
        if b.ids:
            self._dedup(st, b.ids, keep)
        bad = ~(np.isfinite(t) & np.isfinite(v)) & keep
        for i in np.flatnonzero(bad).tolist():
            out.dead_letters.append(self._dead({"device": b.device[i], "t": b.t[i], "value": b.value[i]},
                                               "bad_value", "non-finite time or value", b.device[i]))
        return t, v, keep & ~bad

    def _dedup(self, st: PartitionState, ids: tuple, keep: np.ndarray) -> None:
        """Drop readings whose id was seen, in bounded memory: ids go into the current generation;
        once it holds SEEN_IDS, it becomes the previous one and the generation before is forgotten.
        So the latest SEEN_IDS ids are always remembered (an exact FIFO of them cost ~18 % of the
        core in per-id evictions). Set operations for the common batch (no id seen before, none
        twice), a loop otherwise."""
        cur, before = st.seen, st.seen_before
        if cur.isdisjoint(ids) and before.isdisjoint(ids):
            n = len(cur)
            cur.update(ids)
            if len(cur) - n == len(ids):
                ids = ()  # all new, all distinct
            else:  # some id twice in the batch (none seen before it): judged one by one
                cur.difference_update(ids)
        for i, rid in enumerate(ids):
            if rid in cur or rid in before:
                keep[i] = False
            else:
                cur.add(rid)
        if ids:
            self.counts["duplicates"] += int(keep.size - keep.sum())
        if len(cur) >= SEEN_IDS:
            st.seen_before, st.seen = cur, set()

    def _dead_late(self, b: SignalBatch, t: np.ndarray, v: np.ndarray, mask: np.ndarray, wm: Watermark,
                   out: Output) -> None:
        for i in np.flatnonzero(mask).tolist():
            out.dead_letters.append(self._too_late(b.device[i], b.name[i], b.grid[i], t[i], v[i], wm))

    def _readings(self, st: PartitionState, b: SignalBatch, t: np.ndarray, v: np.ndarray, keep: np.ndarray,
                  found: list) -> None:
        idx = np.flatnonzero(keep)
        self.counts["readings"] += int(idx.size)
        if idx.size == 0:
            return
        idx = idx[np.argsort(t[idx], kind="stable")]  # event-time order inside the batch
        dev = np.asarray(b.device, dtype=object)[idx]
        order = np.argsort(dev, kind="stable")  # then grouped by device, keeping that order
        idx, dev = idx[order], dev[order]
        cuts = np.flatnonzero(dev[1:] != dev[:-1]) + 1
        for lo, hi in zip(np.concatenate(([0], cuts)).tolist(), np.concatenate((cuts, [idx.size])).tolist()):
            i0 = int(idx[lo])
            key = f"d:{b.device[i0]}:{b.name[i0]}"
            m, grid = self._sensor(st, key, b.device[i0], b.name[i0], b.grid[i0])
            if m is None:
                continue
            fs: list[Finding] = []
            m.step_many(t[idx[lo:hi]], v[idx[lo:hi]], fs)
            self._touched(st, key, m, fs, grid, found)

    def _readings_vec(self, st: PartitionState, b: SignalBatch, look: _BatchRows, t: np.ndarray,
                      v: np.ndarray, keep: np.ndarray, found: list) -> None:
        """``_readings`` on the bank: the same monitors, findings, dirty and urgent sources.

        As in ``_readings`` all readings of a device in the segment go to the monitor of the
        first one's name (in event-time order), and new monitors are made in device order.
        """
        idx = np.flatnonzero(keep)
        self.counts["readings"] += int(idx.size)
        if idx.size == 0:
            return
        idx = idx[np.argsort(t[idx], kind="stable")]
        if look.rows is not None:  # the common batch: every source known, one name per device
            r_all = look.rows[idx]
            if idx.size < TWIN_BELOW:
                self._readings_twins(st, r_all, idx, t, v, found)
            else:
                touched = np.zeros(len(st.bank), bool)  # (cheaper than np.unique's sort)
                touched[r_all] = True
                self._bank_step(st, r_all, np.flatnonzero(touched), t[idx], v[idx], found)
            return
        uniq, code = look.codes()
        c = code[idx]
        uc, first = np.unique(c, return_index=True)  # devices in sorted order, first reading of each
        row_of = np.full(len(uniq), -1, np.int64)
        rows, names, grids = st.rows, b.name, b.grid
        ucl, firsts = uc.tolist(), idx[first].tolist()
        got = [rows.get(f"d:{uniq[ci]}:{names[i0]}", -1) for ci, i0 in zip(ucl, firsts)]
        for k in [k for k, r in enumerate(got) if r < 0]:  # new sources, in device order
            ci, i0 = ucl[k], firsts[k]
            got[k] = self._sensor_row(st, uniq[ci], names[i0], grids[i0])
        row_of[uc] = got
        if idx.size < TWIN_BELOW:
            self._readings_twins(st, row_of[c], idx, t, v, found)
            return
        r_all = row_of[c]
        ok = r_all >= 0
        if not ok.all():
            r_all, idx = r_all[ok], idx[ok]
            if idx.size == 0:
                return
        touched = row_of[uc]
        self._bank_step(st, r_all, touched[touched >= 0], t[idx], v[idx], found)

    @staticmethod
    def _bank_step(st: PartitionState, r_all: np.ndarray, touched: np.ndarray, t: np.ndarray, v: np.ndarray,
                   found: list) -> None:
        """Readings (bank row ``r_all[i]``, time, value; rows ``touched``) through the bank."""
        bank, rows = st.bank, st.rows
        if st.twins:
            for r in touched.tolist():
                m = st.twins.pop(r, None)
                if m is not None:
                    bank.restore(r, m.state())
        fs = bank.process(r_all, t, v)
        st.dirty_rows[touched] = True
        st.urgent_rows[touched[bank.pending(touched)]] = True
        for f in fs:
            key = f"d:{f.source}:{f.source_kind}"
            st.urgent_rows[rows[key]] = True
            found.append((f, st.grid_of[key]))

    def _readings_twins(self, st: PartitionState, r_all: np.ndarray, idx: np.ndarray, t: np.ndarray, v: np.ndarray,
                        found: list) -> None:
        """A small segment (reading ``idx[i]`` to bank row ``r_all[i]``, -1 for none), source by
        source on scalar monitors, as ``_readings`` does (in row order, not the scalar core's
        device order: findings are sorted by time and source afterwards, so that is the same)."""
        order = np.argsort(r_all, kind="stable")
        idx, rs = idx[order], r_all[order]
        cuts = np.flatnonzero(rs[1:] != rs[:-1]) + 1
        for lo, hi in zip(np.concatenate(([0], cuts)).tolist(), np.concatenate((cuts, [idx.size])).tolist()):
            r = int(rs[lo])
            if r < 0:
                continue
            m = st.twins.get(r)
            if m is None:
                m = st.twins[r] = st.bank.monitor(r)
            fs: list[Finding] = []
            m.step_many(t[idx[lo:hi]], v[idx[lo:hi]], fs)
            st.dirty_rows[r] = True
            if fs or m.pending():
                st.urgent_rows[r] = True
            grid = st.grid_of[st.row_keys[r]]
            found += [(f, grid) for f in fs]

    def _sensor_row(self, st: PartitionState, device: str, name: str, grid: str) -> int:
        """``_sensor`` for a new key on the bank: its row, or -1 when it is not monitored."""
        d = self.city.devices.get(device)
        if not self._admit(d is not None):
            return -1
        key = f"d:{device}:{name}"
        st.grid_of[key] = grid or (d.area if d is not None else "")
        return self._add_row(st, key, device, name, self._limits(device, name))

    @staticmethod
    def _add_row(st: PartitionState, key: str, device: str, name: str, limits: dict) -> int:
        r = st.rows[key] = st.bank.add(device, name, limits)
        st.row_keys.append(key)
        if r >= st.dirty_rows.size:
            grow = np.zeros(max(64, 2 * st.dirty_rows.size), bool)
            st.dirty_rows = np.concatenate((st.dirty_rows, grow))
            st.urgent_rows = np.concatenate((st.urgent_rows, grow))
        return r

    @staticmethod
    def _touched(st: PartitionState, key: str, m: Monitor, fs: list[Finding], grid: str, found: list) -> None:
        """Book-keeping after a monitor handled data: findings out, state marked for checkpoints."""
        st.dirty.add(key)
        if fs or m.pending():
            st.urgent.add(key)
        found += [(f, grid) for f in fs]

    def _sensor(self, st: PartitionState, key: str, device: str, name: str, grid: str) -> tuple[Monitor | None, str]:
        m = st.monitors.get(key)
        if m is None:
            d = self.city.devices.get(device)
            limits = self._limits(device, name)
            m = self._new(st, key, lambda: sensor_monitor(device, name, limits, self.utc_offset_s), d is not None)
            if m is None:
                return None, grid
            st.grid_of[key] = grid or (d.area if d is not None else "")
        return m, st.grid_of[key]

    def _new(self, st: PartitionState, key: str, make, known: bool) -> Monitor | None:
        if not self._admit(known):
            return None
        m = st.monitors[key] = make()
        return m

    # ------------------------------------------------------------------ discrete events

    def _decode_events(self, b: SignalBatch, out: Output) -> list[tuple[dict, object]]:
        events = []
        for raw in b.events:
            try:
                ev = decode_record(raw)
                float(ev.t)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                self.counts["bad_events"] += 1
                log.warning("undecodable event %s: %s", e, truncate(json.dumps(raw, default=str)))
                out.dead_letters.append(self._dead(raw, "bad_event", str(e), None))
                continue
            events.append((raw, ev))
        return events

    def _events(self, st: PartitionState, events: list, found: list) -> None:
        for ev in sorted(events, key=lambda e: float(e.t)):
            self.counts["events"] += 1
            if isinstance(ev, CameraEvent):
                self._camera_event(st, ev, found)
            elif isinstance(ev, CameraCount):
                self._camera_count(st, ev, found)
            elif isinstance(ev, Presence):
                self._presence(st, ev, found)

    def _grid(self, source: str, grid: str) -> str:
        d = self.city.devices.get(source)
        return grid or (d.area if d is not None else "")

    def _camera_event(self, st: PartitionState, ev: CameraEvent, found: list) -> None:
        if ev.label not in CAMERA_LABELS:
            return
        key = f"l:{ev.camera}:{ev.label}"
        m = st.monitors.get(key) or self._new(st, key, lambda: label_monitor(ev.camera, ev.label),
                                              ev.camera in self.city.devices)
        if m is None:
            return
        grid = st.grid_of.setdefault(key, self._grid(ev.camera, ev.grid))
        det, ep = m.detectors[0], m.episodes[0]
        fs: list[Finding] = []
        if ev.phase == "end":
            f = ep.close(det.name, m.source, m.kind, ev.t, f"{ev.label} ended")
            fs += [f] if f is not None else []
        else:
            if not ep.is_open and ep.pending_since is None and ev.start_time < ev.t:
                m.step(ev.start_time, ev.score, fs)  # the object was seen from its start time
            m.step(ev.t, ev.score, fs)
        self._touched(st, key, m, fs, grid, found)
        st.urgent.add(key)  # camera episodes are short: never lose one

    def _camera_count(self, st: PartitionState, ev: CameraCount, found: list) -> None:
        key = f"c:{ev.camera}:{ev.label}"
        m = st.monitors.get(key) or self._new(st, key, lambda: count_monitor(ev.camera, ev.label, self.utc_offset_s),
                                              ev.camera in self.city.devices)
        if m is None:
            return
        grid = st.grid_of.setdefault(key, self._grid(ev.camera, ev.grid))
        fs: list[Finding] = []
        m.step(ev.t, float(ev.count), fs)
        self._touched(st, key, m, fs, grid, found)

    def _presence(self, st: PartitionState, ev: Presence, found: list) -> None:
        d = self.city.devices.get(ev.device)
        kind = d.kind if d is not None else ""
        grid = self._grid(ev.device, ev.grid)
        since = st.offline.get(ev.device)
        if not ev.online and since is None:
            if len(st.offline) < len(self.city.devices) + MAX_EXTRA_SOURCES:
                st.offline[ev.device] = ev.t
                found.append((Finding("presence", ev.device, kind, ev.t, None, 0.6, ev.t, "device reports offline"),
                              grid))
        elif ev.online and since is not None:
            del st.offline[ev.device]
            found.append((Finding("presence", ev.device, kind, ev.t, None, 0.0, since, "device back online",
                                  active=False), grid))
        st.urgent.add("p")

    # ------------------------------------------------------------------ event-time timers

    def _sweep(self, st: PartitionState, wm: float) -> list[Warning]:
        """Silence and evidence expiry, each time the watermark enters a new tumbling window."""
        st.swept = float(tumbling(np.array([wm]), SWEEP_S)[0])
        found: list[tuple[Finding, str]] = []
        if st.bank is not None:
            if st.twins:
                mask = np.ones(len(st.bank), bool)
                mask[list(st.twins)] = False
                rows, fs = st.bank.sweep(wm, np.flatnonzero(mask))
                more = [(r, f) for r, m in st.twins.items() if (f := m.silence_started(wm)) is not None]
                if more:  # in row order, as the scalar core's monitors are
                    rows, fs = zip(*sorted([*zip(rows, fs), *more], key=lambda rf: rf[0]))
            else:
                rows, fs = st.bank.sweep(wm)
            for r, f in zip(rows, fs):
                key = st.row_keys[r]
                st.dirty_rows[r] = st.urgent_rows[r] = True
                found.append((f, st.grid_of[key]))
        for key, m in st.monitors.items():
            if key.startswith("d:"):
                f = m.silence_started(wm)
                if f is not None:
                    st.dirty.add(key)
                    st.urgent.add(key)
                    found.append((f, st.grid_of[key]))
        found.sort(key=lambda fg: (fg[0].t, fg[0].source))
        return self._fuse(st, found) + self._expire(st, wm)

    def _fuse(self, st: PartitionState, found: list[tuple[Finding, str]]) -> list[Warning]:
        """Findings into the fusion; each live one lowers the event time evidence may expire at."""
        out: list[Warning] = []
        for f, grid in found:
            out += st.fusion.add(f, grid)
            if f.active and f.detector not in TIMELESS:
                seen = self._last_seen(st, f)
                st.expiry_due = min(st.expiry_due, (f.t if seen is None else seen) + st.fusion.expire_s)
        return out

    def _expire(self, st: PartitionState, wm: float) -> list[Warning]:
        """``GridFusion.advance``, skipped while no evidence can expire yet (it asks every live
        finding's source when it last reported: ~700 calls a sweep with a city in alarm)."""
        if wm <= st.expiry_due:
            return []
        seen: list[float] = []

        def last_seen(f: Finding) -> float | None:
            t = self._last_seen(st, f)
            seen.append(f.t if t is None else t)
            return t

        out = st.fusion.advance(wm, last_seen)
        exp = st.fusion.expire_s
        st.expiry_due = min((t + exp for t in seen if wm - t <= exp), default=float("inf"))
        return out

    @staticmethod
    def _last_seen(st: PartitionState, f: Finding) -> float | None:
        """Event time the source of a finding last reported (its monitor's cadence)."""
        if f.detector.startswith("camera_"):
            key = f"l:{f.source}:{f.detector.removeprefix('camera_')}"
        elif f.detector.startswith("counts_"):
            key = f"c:{f.source}:{f.detector.removeprefix('counts_')}"
        else:
            key = f"d:{f.source}:{f.source_kind}"
        if st.bank is not None and key[0] == "d":
            r = st.rows.get(key)
            if r is None:
                return None
            twin = st.twins.get(r)
            return twin.cadence.last_t if twin is not None else st.bank.last_seen(r)
        m = st.monitors.get(key)
        return m.cadence.last_t if m is not None else None

    # ------------------------------------------------------------------ dead letters

    def _dead(self, raw: object, reason: str, detail: str, device: str | None) -> DeadLetter:
        payload = json.dumps(raw, default=str, separators=(",", ":")).encode()
        return DeadLetter(topic=self.topic, reason=reason, detail=detail[:500],
                          payload_b64=base64.b64encode(payload).decode(), received_at=self.clock.now(),
                          device=device, stage="streams")

    def _too_late(self, device: str, name: str, grid: str, t: float, v: float, wm: Watermark) -> DeadLetter:
        raw = {"device": device, "name": name, "grid": grid, "t": t, "value": v}
        return self._dead(raw, "too_late", f"t={t} older than watermark {wm.value} - grace {wm.grace_s}", device)

    # ------------------------------------------------------------------ checkpoints

    def needs_checkpoint(self, partition: int) -> bool:
        st = self.part(partition)
        return bool(st.urgent) or bool(st.urgent_rows.any())

    def checkpoint(self, partition: int, full: bool = True) -> dict[str, object]:
        """State changed since the last checkpoint, per source key (plus the partition's own keys:
        "wm", and "f:grid|event" for each fusion situation changed since, None once it closed).

        Keys are small and bounded (one per device, camera label and the partition); values are
        JSON-able. ``full`` writes every changed source (the periodic checkpoint of learning),
        otherwise only those whose episode moved (cheap, done after the batch that moved them).
        """
        st = self.part(partition)
        keys = st.dirty if full else st.urgent
        out: dict[str, object] = {k: [st.grid_of[k], st.monitors[k].state()] for k in keys if k in st.monitors}
        if st.bank is not None:
            flags = st.dirty_rows if full else st.urgent_rows
            for r in np.flatnonzero(flags).tolist():
                key = st.row_keys[r]
                twin = st.twins.get(r)
                out[key] = [st.grid_of[key], twin.state() if twin is not None else st.bank.state(r)]
            if full:
                st.dirty_rows[:] = False
            else:
                st.dirty_rows &= ~st.urgent_rows
            st.urgent_rows[:] = False
        out["wm"] = [st.watermark.max_t if np.isfinite(st.watermark.max_t) else None, st.swept
                     if np.isfinite(st.swept) else None, sorted(st.offline.items())]
        out.update(self._fusion_changes(st))
        st.dirty -= keys
        st.urgent = set()
        return out

    @staticmethod
    def _fusion_changes(st: PartitionState) -> dict[str, object]:
        """The situations changed since the last checkpoint, one key each ("f:grid|event"): its
        creation rank and state, or None once it closed (the whole fusion was ~100 KB a batch)."""
        fusion, out = st.fusion, {}
        changed, fusion.changed = fusion.changed, set()
        if st.legacy_fusion:
            out["fusion"], st.legacy_fusion = None, False
        for key in [k for k in fusion.open if k in changed]:  # creation order: ranks follow it
            s = fusion.open[key]
            known = st.situations.get(key)
            if known is None or known[0] is not s:  # new (or closed and opened again)
                known = st.situations[key] = (s, st.next_rank)
                st.next_rank += 1
            out[f"f:{key[0]}|{key[1]}"] = [known[1], situation_state(s)]
        for key in changed - fusion.open.keys():
            if st.situations.pop(key, None) is not None:
                out[f"f:{key[0]}|{key[1]}"] = None
        return out

    def restore(self, partition: int, items: dict[str, object]) -> int:
        """Rebuild a partition's state from checkpoint items. Returns how many sources came back."""
        st = self.part(partition)
        n = 0
        for key, value in items.items():
            if key == "wm":
                max_t, swept, offline = value
                st.watermark.max_t = float("-inf") if max_t is None else max_t
                st.swept = float("-inf") if swept is None else swept
                st.offline = dict(offline)
            elif key[:2] == "f:" or key == "fusion":
                continue
            elif key[:2] == "d:" and st.bank is not None:
                grid, state = value
                m = self._monitor_for(key)  # restored as the scalar core does, then adopted
                m.restore(state)
                r = st.rows.get(key)
                if r is None:
                    _, source, name = key.split(":", 2)
                    r = self._add_row(st, key, source, name, self._limits(source, name))
                st.bank.restore(r, m.state())
                st.twins.pop(r, None)
                st.grid_of[key] = grid
                n += 1
            elif key[:2] in ("d:", "l:", "c:"):
                grid, state = value
                m = self._monitor_for(key)
                if m is not None:
                    m.restore(state)
                    st.monitors[key], st.grid_of[key] = m, grid
                    n += 1
        self._restore_fusion(st, items)
        return n

    @staticmethod
    def _restore_fusion(st: PartitionState, items: dict[str, object]) -> None:
        """Situations from their keys, in creation order; else from a legacy "fusion" key."""
        ranked = sorted((v for k, v in items.items() if k[:2] == "f:" and v is not None), key=lambda rv: rv[0])
        if ranked:
            st.fusion.restore([state for _, state in ranked])
        elif items.get("fusion"):
            st.fusion.restore(items["fusion"])
            ranked = list(enumerate(items["fusion"]))
            st.legacy_fusion = True
            st.fusion.changed.update(st.fusion.open)  # rewritten as situation keys next time
        for rank, state in ranked:
            key = (state[2], state[1])  # (grid, event)
            st.situations[key] = (st.fusion.open[key], rank)
        st.next_rank = max((r for r, _ in ranked), default=-1) + 1

    def _limits(self, device: str, name: str) -> dict:
        """The city file's limits of a sensor (none for a device or quantity it does not know)."""
        d = self.city.devices.get(device)
        return dict(d.limits) if d is not None and d.kind == name else {}

    def _admit(self, known: bool) -> bool:
        """Whether a new source gets a monitor: always for the city's devices, up to
        MAX_EXTRA_SOURCES for others (counted as unmonitored beyond)."""
        if not known:
            if self._extra >= MAX_EXTRA_SOURCES:
                self.counts["unmonitored"] += 1
                return False
            self._extra += 1
        return True

    def _monitor_for(self, key: str) -> Monitor | None:
        tag, source, name = key.split(":", 2)
        if tag == "d":
            return sensor_monitor(source, name, self._limits(source, name), self.utc_offset_s)
        if tag == "l":
            return label_monitor(source, name) if name in CAMERA_LABELS else None
        return count_monitor(source, name, self.utc_offset_s)


class _BatchRows:
    """A batch's bank rows for the vector engine, looked up once for all its segments.

    ``rows[i]`` is the row of reading i's (device, name); ``rows`` is None unless every source of
    the batch has a row and no device carries two names in it (each segment would then give all
    of a device's readings to its first name's monitor, as the scalar core does: see ``codes``).
    """

    __slots__ = ("_codes", "devices", "rows")

    def __init__(self, st: PartitionState, b: SignalBatch) -> None:
        self.devices, self._codes, self.rows = b.device, None, None
        bank, n = st.bank, len(b.device)
        rows = np.fromiter(map(bank.index.get, b.device, itertools.repeat(-1)), np.int64, n)  # latest row
        if n and rows.min() >= 0 and tuple(map(bank.kinds.__getitem__, rows.tolist())) == b.name:
            self.rows = rows  # the rows' own (device, name): the readings'

    def codes(self) -> tuple[list[str], np.ndarray]:
        if self._codes is None:
            self._codes = _codes(self.devices)
        return self._codes


def _codes(devices: tuple) -> tuple[list[str], np.ndarray]:
    """The batch's distinct devices in sorted order, and each reading's index into them."""
    uniq = sorted(dict.fromkeys(devices))
    index = {d: i for i, d in enumerate(uniq)}
    return uniq, np.fromiter(map(index.__getitem__, devices), np.int64, len(devices))


def _utc_offset(tz: str) -> float:
    """The city's UTC offset (seconds) for hour-of-day profiles; 0 if the zone is unknown."""
    try:
        off = datetime.now(zoneinfo.ZoneInfo(tz)).utcoffset()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return 0.0
    return off.total_seconds() if off is not None else 0.0
