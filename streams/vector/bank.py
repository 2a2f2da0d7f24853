"""A struct-of-arrays bank of sensor monitors: many devices' detectors stepped with numpy.

Why: the scalar :class:`~streams.monitor.Monitor` is nearly all Python overhead per reading
(six detector objects, six episodes, ~38 us per reading in the stream core's profile). Here the state of every
device's detectors lives in numpy arrays (one column per device) and a batch is processed in
*rounds*: round k holds the k-th reading of every device that has at least k in the batch, so
readings of one device keep their order while each round is fully vectorised.

Covered exactly (same findings, same state, bit for bit) is what
:func:`streams.monitor.sensor_monitor` builds for a sensor: PhysicalRange, Flatline, optional
StaticLimits, SeasonalBaseline, Cusum against its seasonal profile, RateOfChange, their episodes,
the anomalous-run / relearn rule, the cadence and silence (both the silence a reading ends and
the watermark sweep). Camera label and count monitors are not covered. The operations and their
order are those of the scalar code (only + - * / abs, floor division, Python's min/max; no
transcendental functions), so no tolerance is needed anywhere.
"""

from __future__ import annotations

import base64
from types import SimpleNamespace

import numpy as np

from streams.detectors.base import Finding
from streams.detectors.baseline import (
    _SLOTS,
    DAY,
    MIN_H,
    MIN_N,
    RES,
    RES_PER_HOUR,
    SMOOTH,
    WEEK,
    WEEK_S,
    SeasonalBaseline,
    SeasonalProfile,
)
from streams.detectors.change import DEV_ALPHA, FULL_S, Cusum
from streams.detectors.faults import Cadence, Flatline, PhysicalRange
from streams.detectors.limits import StaticLimits
from streams.detectors.rate import RateOfChange
from streams.monitor import (
    BASELINE_SIDE,
    RELEARN_AFTER_S,
    RELEARN_MIN_READINGS,
    SILENCE,
    Monitor,
    sensor_monitor,
)
from streams.vector import episodes
from streams.vector.explain import Round, explain
from streams.vector.kernels import pmax, pmin, squash, winsorised_step

#: the bank's detector columns, in the order a sensor monitor lists them (limits may be absent)
DETECTORS = (PhysicalRange, Flatline, StaticLimits, SeasonalBaseline, Cusum, RateOfChange)
NAMES = tuple(d.name for d in DETECTORS)
RANGE, FLAT, LIMITS, BASE, CHANGE, RATE = range(len(DETECTORS))
GUARDED = np.array([d in (SeasonalBaseline, Cusum) for d in DETECTORS])

#: per-device scalar state and parameters, one row of ``SensorBank.s`` each (NaN stands for None)
FIELDS = ("cad_last", "cad_level", "cad_spread", "cad_n", "silent", "run", "run_since",
          "low", "high", "fl_last", "fl_run", "fl_moves",
          "warning", "alarm", "above", "has_limits", "side",
          "cu_level", "cu_spread", "cu_n", "cu_pos", "cu_neg", "cu_since", "cu_last", "cu_dev", "pf_first",
          "rt_limit", "rt_last_t", "rt_last_x", "rt_level", "rt_spread", "rt_n")
F = SimpleNamespace(**{name: i for i, name in enumerate(FIELDS)})
_BL = _SLOTS + 1  # length of a baseline's arrays (one spare slot, as in SeasonalBaseline)
_GLOB = _SLOTS - 1
_NONE = float("nan")


def _opt(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


def _optf(v: float) -> float | None:
    """:func:`_opt` of a Python float."""
    return None if v != v else v


def _nan(v: float | None) -> float:
    return _NONE if v is None else float(v)


class _Params:
    """Constants of the scalar detectors, read from default instances (not copied by hand)."""

    def __init__(self, utc_offset_s: float) -> None:
        base, cusum, rate, flat, lim, cad = (SeasonalBaseline(utc_offset_s), Cusum(), RateOfChange(), Flatline(),
                                             StaticLimits(None, None), Cadence())
        self.utc_offset_s, self.b_alpha, self.b_warmup = base.utc_offset_s, base.alpha, base.warmup
        # (Cusum's own warmup does not apply: a sensor's Cusum follows its profile's expectation)
        self.k, self.h = cusum.k, cusum.h
        prof = SeasonalProfile(utc_offset_s)
        self.pf_per_hour = prof.per_hour
        self.r_warmup, self.r_alpha, self.r_clip = rate.warmup, rate.rates.alpha, rate.rates.clip
        self.min_run = flat.min_run
        self.hysteresis = lim.hysteresis
        self.factor, self.min_silence_s = cad.factor, cad.min_silence_s
        self.g_alpha, self.g_clip = cad.gaps.alpha, cad.gaps.clip
        self.rules = episodes.Rules([d.rule for d in DETECTORS])


class SensorBank:
    """Sensor monitors of many devices (one city time zone) as arrays; see the module docstring.

    ``add`` registers a device (as ``sensor_monitor(device, kind, limits, utc_offset_s)`` would
    build it) and returns its row; ``process(rows, t, x)`` is ``Monitor.step`` on every reading,
    in input order per device, and returns the findings in the order the scalar monitors would
    give them if the input is grouped by device (the stream core's order).
    """

    def __init__(self, utc_offset_s: float = 0.0, capacity: int = 64) -> None:
        self.p = _Params(utc_offset_s)
        self.sources: list[str] = []
        self.kinds: list[str] = []
        self.index: dict[str, int] = {}
        self.s = np.zeros((len(FIELDS), capacity))
        self.bl = np.zeros((3, capacity, _BL))  # level, spread, n of every baseline slot
        self.pf = np.zeros((3, capacity, _BL))  # the same for every Cusum's seasonal profile
        self.ep = np.zeros((len(episodes.FIELDS), len(DETECTORS), capacity))

    def __len__(self) -> int:
        return len(self.sources)

    # ------------------------------------------------------------------ devices

    def add(self, source: str, kind: str, limits: dict[str, float] | None = None) -> int:
        """Register a device with fresh detectors (what ``sensor_monitor`` would build)."""
        row = len(self.sources)
        if row == self.s.shape[1]:
            self._grow()
        limits = limits or {}
        rng, rate = PhysicalRange(kind), RateOfChange(kind)
        col = np.zeros(len(FIELDS))
        for name in ("cad_last", "silent", "run_since", "fl_last", "cu_since", "cu_last", "pf_first", "rt_last_t"):
            col[getattr(F, name)] = _NONE
        col[F.low], col[F.high] = rng.low, rng.high
        col[F.warning], col[F.alarm] = _nan(limits.get("warning")), _nan(limits.get("alarm"))
        col[F.has_limits] = float(bool(limits))
        col[F.side] = BASELINE_SIDE.get(kind, 0)
        col[F.rt_limit] = _nan(rate.limit)
        self.s[:, row] = col
        self.bl[:, row] = 0.0
        self.pf[:, row] = 0.0
        self.ep[:, :, row] = 0.0
        for f in (episodes.PENDING_SINCE, episodes.OPEN_SINCE, episodes.CALM_SINCE):
            self.ep[f, :, row] = _NONE
        self.sources.append(source)
        self.kinds.append(kind)
        self.index[source] = row
        return row

    def add_monitor(self, m: Monitor) -> int:
        """Adopt a scalar sensor monitor: its configuration and its state (e.g. a restored one).

        Raises ValueError for anything the bank would not run exactly (camera monitors, other
        detector sets or parameters, another time zone).
        """
        types = [type(d) for d in m.detectors]
        if types == list(DETECTORS):
            lim = m.detectors[LIMITS]
            limits = {k: v for k, v in (("warning", lim.warning), ("alarm", lim.alarm)) if v is not None}
            limits = limits or {"other": 0.0}  # a StaticLimits without levels: present, never fires
        elif types == [d for d in DETECTORS if d is not StaticLimits]:
            limits = {}
        else:
            raise ValueError(f"{m.source}: detectors {[t.__name__ for t in types]} are not a sensor bank's")
        if _config(m) != _config(sensor_monitor(m.source, m.kind, limits, self.p.utc_offset_s)):
            raise ValueError(f"{m.source}: detector parameters differ from the bank's")
        row = self.add(m.source, m.kind, limits)
        self.restore(row, m.state())
        return row

    def _grow(self) -> None:
        cap = max(64, 2 * self.s.shape[1])
        self.s = np.concatenate((self.s, np.zeros((self.s.shape[0], cap - self.s.shape[1]))), axis=1)
        self.bl = np.concatenate((self.bl, np.zeros((3, cap - self.bl.shape[1], _BL))), axis=1)
        self.pf = np.concatenate((self.pf, np.zeros((3, cap - self.pf.shape[1], _BL))), axis=1)
        self.ep = np.concatenate((self.ep, np.zeros(self.ep.shape[:2] + (cap - self.ep.shape[2],))), axis=2)

    # ------------------------------------------------------------------ readings

    def process(self, rows: np.ndarray, t: np.ndarray, x: np.ndarray) -> list[Finding]:
        """``Monitor.step`` on every reading (device ``rows[i]``, time ``t[i]``, value ``x[i]``).

        Readings of one device are taken in input order (the core sorts by event time first).
        """
        rows = np.asarray(rows, dtype=np.int64)
        t, x = np.asarray(t, dtype=float), np.asarray(x, dtype=float)
        if rows.size == 0:
            return []
        out: list[tuple[int, int, Finding]] = []
        for sel in _rounds(rows):
            self._round(rows[sel], sel, t[sel], x[sel], out)
        out.sort(key=lambda o: (o[0], o[1]))
        return [f for _, _, f in out]

    def _round(self, r: np.ndarray, pos: np.ndarray, t: np.ndarray, x: np.ndarray, out: list) -> None:
        """One reading of each of the devices ``r`` (distinct), exactly as ``Monitor.step``."""
        lo, hi = int(r[0]), int(r[-1]) + 1
        span = hi - lo == r.size  # rows lo..hi-1 (rows are distinct and in order): the common round
        # copies, written back at the end of the round (slices of a span: ~10x cheaper than gathers)
        S = self.s[:, lo:hi].copy() if span else self.s.take(r, axis=1)
        E = self.ep[:, :, lo:hi].copy() if span else self.ep.take(r, axis=2)
        flat = self.bl.reshape(3, -1, copy=False)  # a view (row, slot) -> row * _BL + slot: fast to index
        slots = self._slots(t)
        cells = r[:, None] * _BL + slots
        B = flat.take(cells, axis=1)
        flat_p = self.pf.reshape(3, -1, copy=False)
        frac = np.remainder(t + self.p.utc_offset_s, 3600.0) / 3600.0
        nbrs = self._neighbours(slots, frac)
        cells_p = np.concatenate((cells, r[:, None] * _BL + nbrs), axis=1)
        P = flat_p.take(cells_p, axis=1)
        same_day = nbrs[:, 0] // DAY == slots[:, 0] // DAY  # hour-of-week neighbour on the same day
        with np.errstate(all="ignore"):  # branches not taken are computed too (NaN, inf): masked out
            self._silence_ended(S, r, pos, t, out)
            scores, c = self._score(S, B, P, t, x, frac, same_day)
            moves = episodes.update(E, self.p.rules, t, scores)
            learn = (scores < 0.5) | self._stale(S, t, (scores >= 0.5).any(axis=0)) | ~GUARDED[:, None]
            rebase = self._learn(S, B, P, c, t, x, learn)
            self._seen(S, t)
        if span:
            self.s[:, lo:hi] = S
        else:  # flat indices: ``self.s[:, r] = S`` is ~5x slower
            _flat(self.s)[r + np.arange(0, self.s.size, self.s.shape[1])[:, None]] = S
        _flat(self.bl)[cells + np.arange(0, self.bl.size, flat.shape[1])[:, None, None]] = B  # (as above)
        _flat(self.pf)[cells_p + np.arange(0, self.pf.size, flat_p.shape[1])[:, None, None]] = P
        for i, d in rebase:  # rare: a shift became the new normal (Cusum.rebase)
            self.pf[0, int(r[i]), :RES] += d
        if moves.at.size:  # the other episodes did not move
            at = moves.at
            _flat(self.ep)[r[at] + np.arange(0, self.ep.size, self.ep.shape[2])[:, None]] = E[:, :, at].reshape(-1, at.size)
        self._episode_findings(r, pos, t, x, scores, moves, c, out)

    @staticmethod
    def _stale(S: np.ndarray, t: np.ndarray, anomalous: np.ndarray) -> np.ndarray:
        """Monitor._stale: count the anomalous run; True where it is the new normal."""
        S[F.run] = np.where(anomalous, S[F.run] + 1, 0.0)
        since = S[F.run_since]
        S[F.run_since] = np.where(anomalous, np.where(np.isnan(since), t, since), _NONE)
        return (S[F.run] > RELEARN_MIN_READINGS) & (t - S[F.run_since] >= RELEARN_AFTER_S)

    def _slots(self, t: np.ndarray) -> np.ndarray:
        """Baseline slots per reading: hour of week, hour of day, whole series, residuals."""
        hours = np.floor_divide(t + self.p.utc_offset_s, 3600).astype(np.int64)
        m = t.size
        return np.stack(((hours // 24 + 3) % 7 * 24 + hours % 24, WEEK + hours % DAY,
                         np.full(m, _GLOB), np.full(m, RES)), axis=1)

    @staticmethod
    def _neighbours(slots: np.ndarray, frac: np.ndarray) -> np.ndarray:
        """The hour-of-week and hour-of-day buckets next to a reading's, on the side of the hour
        it is in (SeasonalProfile.expected interpolates towards them)."""
        step = np.where(frac >= 0.5, 1, -1)
        return np.stack(((slots[:, 0] + step) % WEEK, WEEK + (slots[:, 1] - WEEK + step) % DAY), axis=1)

    def _score(self, S: np.ndarray, B: np.ndarray, P: np.ndarray, t: np.ndarray, x: np.ndarray,
               frac: np.ndarray, same_day: np.ndarray) -> tuple[np.ndarray, Round]:
        """Every detector's ``score_one``; Cusum and StaticLimits update their state, as theirs do."""
        p = self.p
        m = t.size
        scores = np.zeros((len(DETECTORS), m))
        scores[RANGE] = np.where((S[F.low] <= x) & (x <= S[F.high]), 0.0, 0.6)
        flat_run = np.where(x == S[F.fl_last], S[F.fl_run] + 1, 1.0)
        scores[FLAT] = np.where((flat_run < p.min_run) | (S[F.fl_moves] < p.min_run), 0.0, 0.5)
        lo, alarm, above, alarm_hit = self._limits(S, x, scores)
        has_e, level, spread, z_raw = self._expected(B, x)
        has_p, p_level, p_z = self._profile_expected(P, S[F.pf_first], t, x, frac, same_day)
        # the Cusum's expectation: its profile's, else (the first week) its fallback, the baseline
        c_has, c_level, c_z = has_p | has_e, np.where(has_p, p_level, level), np.where(has_p, p_z, z_raw)
        z2 = (x - p_level) / spread
        second = has_p & (np.abs(z2) < np.abs(z_raw))  # SeasonalBaseline.second's level is nearer
        b_level = np.where(second, p_level, level)
        z_raw = np.where(second, z2, z_raw)
        side = S[F.side]
        z = np.where(side != 0, pmax(0.0, z_raw * side), z_raw)
        scores[BASE] = np.where(has_e, squash(np.abs(z), *SQUASH_BASELINE), 0.0)
        pos, neg, cusum, dt = self._cusum(S, c_has, c_z, c_level, t, x)
        judged = np.where(side > 0, pos, np.where(side < 0, neg, cusum))  # Cusum.side: as the baseline's
        scores[CHANGE] = np.where(c_has, squash(judged / p.h, *SQUASH_CHANGE), 0.0)
        rate_ok, rate, warm, rz = self._rate(S, t, x, scores)
        c = Round(x, S[F.low], S[F.high], flat_run, lo, alarm, above, alarm_hit, has_e, level, b_level, spread, z,
                  has_p, p_level, c_has, c_level, dt, pos, neg, cusum, rate_ok, rate, S[F.rt_limit], warm, rz)
        return scores, c

    def _limits(self, S: np.ndarray, x: np.ndarray, scores: np.ndarray) -> tuple:
        """StaticLimits.score_one: hysteresis on the lower limit, then alarm or warning score."""
        warning, alarm = S[F.warning], S[F.alarm]
        lo = np.where(np.isnan(warning), alarm, warning)
        has_lo = ~np.isnan(lo)
        was = S[F.above] != 0
        above = np.where(has_lo, x >= np.where(was, lo - np.abs(lo) * self.p.hysteresis, lo), was)
        S[F.above] = above
        has_alarm = ~np.isnan(alarm)
        alarm_hit = has_alarm & (x >= alarm)
        s_alarm = pmin(1.0, 0.85 + (x - alarm) / pmax(np.abs(alarm), 1e-9))
        lo2 = lo * 2
        top = np.where(has_alarm, alarm, np.where(lo2 == 0, 1.0, lo2))  # ``lo * 2 or 1.0``
        s_warn = 0.5 + 0.3 * pmax(0.0, pmin(1.0, (x - lo) / pmax(top - lo, 1e-9)))
        scores[LIMITS] = np.where(has_lo & above, np.where(alarm_hit, s_alarm, s_warn), 0.0)
        return lo, alarm, above, alarm_hit

    @staticmethod
    def _week_old(first, t):
        """SeasonalProfile.week_old (False while ``first`` is None, NaN)."""
        return (first == first) & (t - first >= WEEK_S)

    def _expected(self, B: np.ndarray, x: np.ndarray) -> tuple:
        """SeasonalBaseline.expected (hour-of-week bucket, else hour-of-day) and the raw z."""
        lv, sp, nn = B
        ar = np.arange(x.size)
        use_how = nn[:, 0] >= MIN_N
        has_e = (nn[:, 2] >= self.p.b_warmup) & (use_how | (nn[:, 1] >= MIN_N))
        k = np.where(use_how, 0, 1)
        level = lv[ar, k]
        spread = _spread(sp, ar, k, level)
        return has_e, level, spread, (x - level) / spread

    def _profile_expected(self, P: np.ndarray, first: np.ndarray, t: np.ndarray, x: np.ndarray,
                          frac: np.ndarray, same_day: np.ndarray) -> tuple:
        """SeasonalProfile.expected: from its second week, the hour-of-week bucket (else the
        hour-of-day one), interpolated towards the neighbouring bucket where that is a slope;
        and the raw z."""
        lv, sp, nn = P
        ar = np.arange(x.size)
        use_how = nn[:, 0] >= MIN_H
        k = np.where(use_how, 0, 1)
        ls = lv[ar, k]
        has = self._week_old(first, t) & (nn[ar, k] >= MIN_H)
        spread = _spread(sp, ar, k, ls)
        nb = k + 4  # the neighbour's column: 4 (hour of week) or 5 (hour of day)
        gap = lv[ar, nb] - ls
        slope = ((nn[ar, nb] >= MIN_H) & ~(np.abs(gap) > SMOOTH * pmax(sp[ar, k], sp[ar, nb]))
                 & (same_day | ~use_how))
        level = np.where(slope, ls + gap * np.where(frac >= 0.5, frac - 0.5, 0.5 - frac), ls)
        return has, level, (x - level) / spread

    def _cusum(self, S: np.ndarray, has_e: np.ndarray, z_raw: np.ndarray, level: np.ndarray, t: np.ndarray,
               x: np.ndarray) -> tuple:
        """Cusum.score_one against its profile (sums move only where the profile has an expectation)."""
        p = self.p
        last = S[F.cu_last]
        first = np.isnan(last)
        dt = np.where(first, 0.0, pmin(3600.0, pmax(0.0, t - last)))
        S[F.cu_last] = np.where(first, t, pmax(last, t))
        dev = S[F.cu_dev]
        S[F.cu_dev] = np.where(has_e, dev + DEV_ALPHA * (x - level - dev), dev)
        w = np.where(first, 1.0, pmin(1.0, dt / FULL_S))
        cap = 3.0 * p.h
        zc = pmax(-10.0, pmin(10.0, z_raw))
        pos = np.where(has_e, pmin(cap, pmax(0.0, S[F.cu_pos] + w * (zc - p.k))), S[F.cu_pos])
        neg = np.where(has_e, pmin(cap, pmax(0.0, S[F.cu_neg] + w * (-zc - p.k))), S[F.cu_neg])
        s = pmax(pos, neg)
        since = S[F.cu_since]
        S[F.cu_since] = np.where(has_e, np.where(s == 0.0, _NONE, np.where(np.isnan(since), t, since)), since)
        S[F.cu_pos], S[F.cu_neg] = pos, neg
        return pos, neg, s, dt

    def _rate(self, S: np.ndarray, t: np.ndarray, x: np.ndarray, scores: np.ndarray) -> tuple:
        """RateOfChange.score_one: a per-kind limit, else the device's own learned rates."""
        ok = t > S[F.rt_last_t]  # False while last_t is None (NaN)
        rate = (x - S[F.rt_last_x]) / (t - S[F.rt_last_t]) * 60.0
        limit = S[F.rt_limit]
        warm = S[F.rt_n] >= self.p.r_warmup
        rl = S[F.rt_level]
        rz = np.abs((rate - rl) / pmax(pmax(S[F.rt_spread], 1e-9), np.abs(rl) * 1e-3))
        s = np.where(~np.isnan(limit), squash(rate / limit, *SQUASH_RATE_LIMIT),
                     np.where(warm, squash(rz, *SQUASH_RATE_LEARNED), 0.0))
        scores[RATE] = np.where(ok, s, 0.0)
        return ok, rate, warm, rz

    def _learn(self, S: np.ndarray, B: np.ndarray, P: np.ndarray, c: Round, t: np.ndarray, x: np.ndarray,
               learn: np.ndarray) -> list[tuple[int, float]]:
        """Every detector's ``learn_one`` where the monitor lets it learn (``learn``, per column).

        Returns the Cusum rebases: (position in the round, the shift), for the caller to apply
        to the whole profile (``P`` holds only this reading's buckets).
        """
        p = self.p
        _learn_buckets(B, learn[BASE], c.has_e, c.level, x, p.b_alpha, 0.02)
        s = pmax(S[F.cu_pos], S[F.cu_neg])
        gate = ~c.p_has | (learn[CHANGE] & (s < p.h))  # learn_one, and learn_guarded where not profiled
        first = S[F.pf_first]
        S[F.pf_first] = np.where(gate & np.isnan(first), t, first)
        h = c.dt / 3600.0
        _learn_buckets(P, gate, c.p_has, c.p_level, x, (p.pf_per_hour * h)[:, None], RES_PER_HOUR * h, h)
        rebase = np.flatnonzero(learn[CHANGE] & (s >= 2.0 * p.h))
        out = [(int(i), float(S[F.cu_dev, i])) for i in rebase if c.p_has[i]]  # (the fallback's: no shift)
        for f in (F.cu_dev, F.cu_pos, F.cu_neg):
            S[f, rebase] = 0.0
        S[F.cu_since, rebase] = _NONE
        same = x == S[F.fl_last]
        S[F.fl_run] = np.where(same, S[F.fl_run] + 1, 1.0)
        S[F.fl_moves] = np.where(same, S[F.fl_moves], pmin(S[F.fl_moves] + 1, float(1 << 30)))
        S[F.fl_last] = x
        _robust_learn(S, F.rt_level, c.rate_ok, c.rate, p.r_alpha, p.r_clip)
        move = np.isnan(S[F.rt_last_t]) | c.rate_ok
        S[F.rt_last_t] = np.where(move, t, S[F.rt_last_t])
        S[F.rt_last_x] = np.where(move, x, S[F.rt_last_x])
        return out

    def _seen(self, S: np.ndarray, t: np.ndarray) -> None:
        """Cadence.seen: learn the gap, move last_t forward (never back)."""
        last = S[F.cad_last]
        ok = t > last
        _robust_learn(S, F.cad_level, ok, t - last, self.p.g_alpha, self.p.g_clip)
        S[F.cad_last] = np.where(np.isnan(last) | ok, t, last)

    # ------------------------------------------------------------------ findings

    def _deadline(self, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cadence.deadline: (known, event time after which the device counts as silent)."""
        p = self.p
        known = ~np.isnan(S[F.cad_last]) & (S[F.cad_n] >= 3)
        return known, S[F.cad_last] + pmax(p.min_silence_s, p.factor * (S[F.cad_level] + 3 * S[F.cad_spread]))

    def _silence_finding(self, row: int, deadline: float, S: np.ndarray, i: int) -> Finding:
        last, gap = float(S[F.cad_last, i]), float(S[F.cad_level, i])
        return Finding(SILENCE, self.sources[row], self.kinds[row], float(deadline), None, 0.6, last,
                       f"no reading since {last:.0f} (usual gap {gap:.0f} s)")

    def _silence_ended(self, S: np.ndarray, r: np.ndarray, pos: np.ndarray, t: np.ndarray, out: list) -> None:
        """Monitor.silence_ended: report the silence a reading ends (and its start if unseen)."""
        known, deadline = self._deadline(S)
        start = known & (t > deadline) & ~(S[F.silent] == S[F.cad_last])
        for i in np.flatnonzero(start).tolist():
            out.append((int(pos[i]), 0, self._silence_finding(int(r[i]), deadline[i], S, i)))
        S[F.silent] = np.where(start, S[F.cad_last], S[F.silent])
        again = S[F.silent] == S[F.cad_last]
        for i in np.flatnonzero(again).tolist():
            row = int(r[i])
            out.append((int(pos[i]), 1, Finding(SILENCE, self.sources[row], self.kinds[row], float(t[i]), None, 0.0,
                                                float(S[F.silent, i]), "reporting again", active=False)))
        S[F.silent] = np.where(again, _NONE, S[F.silent])

    def _episode_findings(self, r: np.ndarray, pos: np.ndarray, t: np.ndarray, x: np.ndarray, scores: np.ndarray,
                          moves: episodes.Moves, c: Round, out: list) -> None:
        for j, k in zip(*np.nonzero(moves.opened | moves.raised | moves.closed), strict=True):
            i = int(moves.at[k])
            row, ti, xi = int(r[i]), float(t[i]), float(x[i])
            why = explain(int(j), c, i, float(scores[j, i]))
            if moves.closed[j, k]:
                f = Finding(NAMES[j], self.sources[row], self.kinds[row], ti, xi, 0.0, float(moves.started[j, k]),
                            f"back to normal: {why}", active=False)
            else:
                f = Finding(NAMES[j], self.sources[row], self.kinds[row], ti, xi, float(scores[j, i]),
                            float(moves.open_since[j, k]), why)
            out.append((int(pos[i]), 2 + int(j), f))

    def silence_started(self, watermark: float, rows: np.ndarray | None = None) -> list[Finding]:
        """Monitor.silence_started for every device (the core's sweep) or ``rows``, in that order."""
        return self.sweep(watermark, rows)[1]

    def sweep(self, watermark: float, rows: np.ndarray | None = None) -> tuple[list[int], list[Finding]]:
        """:meth:`silence_started`, also giving the row of each finding."""
        if rows is None:  # every row: a view (only F.silent is written below, after S is read)
            rows, S = np.arange(len(self)), self.s[:, :len(self)]
        else:
            rows = np.asarray(rows, dtype=np.int64)
            S = self.s[:, rows]
        known, deadline = self._deadline(S)
        fire = np.flatnonzero(known & ~(watermark < deadline) & ~(S[F.silent] == S[F.cad_last]))
        if fire.size == 0:
            return [], []
        out = [self._silence_finding(int(rows[i]), deadline[i], S, i) for i in fire.tolist()]
        self.s[F.silent, rows[fire]] = S[F.cad_last, fire]
        return rows[fire].tolist(), out

    def pending(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Monitor.pending per row (every row, or ``rows``): some episode is about to open."""
        sel = slice(None, len(self)) if rows is None else rows
        ps, os_ = self.ep[episodes.PENDING_SINCE][:, sel], self.ep[episodes.OPEN_SINCE][:, sel]
        return (~np.isnan(ps) & np.isnan(os_)).any(axis=0)

    def last_seen(self, row: int) -> float | None:
        """The cadence's last event time (what the core's ``_last_seen`` reads)."""
        return _opt(self.s[F.cad_last, row])

    # ------------------------------------------------------------------ state (Monitor.state's format)

    def _columns(self, row: int) -> list[int]:
        return [j for j in range(len(DETECTORS)) if j != LIMITS or self.s[F.has_limits, row]]

    def state(self, row: int) -> list:
        """Exactly ``Monitor.state()`` of the equivalent scalar monitor (checkpoints stay compatible)."""
        s = self.s[:, row].tolist()  # Python floats: cheaper to read one by one than numpy scalars
        raw = self.bl[:, row].tobytes()  # level, spread, n arrays one after the other
        profile = [base64.b64encode(self.pf[:, row].tobytes()).decode(), _optf(s[F.pf_first])]
        cols = self._columns(row)
        dets = {RANGE: [], FLAT: [_optf(s[F.fl_last]), int(s[F.fl_run]), int(s[F.fl_moves])],
                LIMITS: [bool(s[F.above])], BASE: [base64.b64encode(raw).decode()],
                CHANGE: [_robust_state(s, F.cu_level), s[F.cu_pos], s[F.cu_neg], _optf(s[F.cu_since]),
                         profile, _optf(s[F.cu_last]), s[F.cu_dev]],
                RATE: [_optf(s[F.rt_last_t]), s[F.rt_last_x], _robust_state(s, F.rt_level)]}
        e = self.ep[:, :, row].T.tolist()
        eps = [[_optf(ps), int(pn), _optf(os_), rep, _optf(calm), peak]
               for ps, pn, os_, rep, calm, peak in (e[j] for j in cols)]
        return [[dets[j] for j in cols], eps, int(s[F.run]),
                [_optf(s[F.cad_last]), _robust_state(s, F.cad_level)], _optf(s[F.silent]), _optf(s[F.run_since])]

    def restore(self, row: int, state: list) -> None:
        """Inverse of :meth:`state` (accepts a scalar monitor's checkpoint)."""
        dets, eps, run, cad, silent = state[:5]
        s = self.s[:, row]  # a view
        for j, d, e in zip(self._columns(row), dets, eps, strict=True):
            self.ep[:, j, row] = [_nan(e[0]), e[1], _nan(e[2]), e[3], _nan(e[4]), e[5]]
            if j == FLAT:
                s[F.fl_last], s[F.fl_run], s[F.fl_moves] = _nan(d[0]), d[1], d[2]
            elif j == LIMITS:
                s[F.above] = float(bool(d[0]))
            elif j == BASE:
                self.bl[:, row] = np.frombuffer(base64.b64decode(d[0]), dtype=np.float64).reshape(3, _BL)
            elif j == CHANGE:
                _robust_restore(s, F.cu_level, d[0])
                s[F.cu_pos], s[F.cu_neg], s[F.cu_since] = d[1], d[2], _nan(d[3])
                if len(d) > 4:  # (checkpoints before 2026-12-04 have no profile)
                    self.pf[:, row] = np.frombuffer(base64.b64decode(d[4][0]), dtype=np.float64).reshape(3, _BL)
                    s[F.pf_first], s[F.cu_last], s[F.cu_dev] = _nan(d[4][1]), _nan(d[5]), d[6]
            elif j == RATE:
                s[F.rt_last_t], s[F.rt_last_x] = _nan(d[0]), d[1]
                _robust_restore(s, F.rt_level, d[2])
        s[F.run] = run
        s[F.cad_last] = _nan(cad[0])
        _robust_restore(s, F.cad_level, cad[1])
        s[F.silent] = _nan(silent)
        s[F.run_since] = _nan(state[5]) if len(state) > 5 else _NONE  # (as Monitor.restore)

    def monitor(self, row: int, utc_offset_s: float | None = None) -> Monitor:
        """The equivalent scalar monitor (for checks, or to hand a device back to the scalar path)."""
        s = self.s[:, row]
        limits = {k: float(s[getattr(F, k)]) for k in ("warning", "alarm") if not np.isnan(s[getattr(F, k)])}
        if s[F.has_limits] and not limits:
            limits = {"other": 0.0}  # limits without warning/alarm: a StaticLimits that never fires
        m = sensor_monitor(self.sources[row], self.kinds[row], limits,
                           self.p.utc_offset_s if utc_offset_s is None else utc_offset_s)
        m.restore(self.state(row))
        return m


#: (z0, z1) of the squash calls in the scalar detectors (literals there, so literals here)
SQUASH_BASELINE = (4.0, 10.0)
SQUASH_CHANGE = (1.0, 3.0)
SQUASH_RATE_LIMIT = (1.0, 3.0)
SQUASH_RATE_LEARNED = (6.0, 15.0)


def _config(m: Monitor) -> tuple:
    """Everything but state that makes a sensor monitor's detectors behave as they do."""
    out: list = [type(m.cadence), m.cadence.factor, m.cadence.min_silence_s, m.cadence.gaps.alpha, m.cadence.gaps.clip]
    for d in m.detectors:
        out.append(type(d))
        if isinstance(d, PhysicalRange):
            out += [d.low, d.high]
        elif isinstance(d, Flatline):
            out += [d.min_run]
        elif isinstance(d, StaticLimits):
            out += [d.warning, d.alarm, d.hysteresis]
        elif isinstance(d, SeasonalBaseline):
            out += [d.alpha, d.warmup, d.utc_offset_s, d.side, d.second is m.detectors[-2].profile]
        elif isinstance(d, Cusum):
            pf = d.profile
            out += [d.k, d.h, d.warmup, d.side == m.detectors[-3].side, d.ref.alpha, d.ref.clip,
                    None if pf is None else (pf.per_hour, pf.warmup, pf.utc_offset_s, pf.alpha),
                    d.fallback is m.detectors[-3]]
        elif isinstance(d, RateOfChange):
            out += [d.limit, d.warmup, d.rates.alpha, d.rates.clip]
    return tuple(out)


def _flat(a: np.ndarray) -> np.ndarray:
    """A 1-d view of ``a`` (raises rather than copy: writes through it must land in ``a``)."""
    v = a.view()
    v.shape = (a.size,)
    return v


def _spread(sp: np.ndarray, ar: np.ndarray, k: np.ndarray, level: np.ndarray) -> np.ndarray:
    """SeasonalBaseline._spread of column ``k`` of gathered buckets (column 3: residual, 2: all)."""
    return pmax(pmax(pmax(pmax(sp[ar, k], 0.8 * sp[:, 3]), 0.05 * sp[:, 2]), 1e-6 * np.abs(level)), 1e-9)


def _learn_buckets(B: np.ndarray, gate: np.ndarray, has_e: np.ndarray, level: np.ndarray, x: np.ndarray,
                   alpha, res_alpha, h: np.ndarray | None = None) -> None:
    """A seasonal learn_one where ``gate``, on a round's gathered buckets ``B`` (hour of week, hour
    of day, all, residual; a profile's two neighbours after them are only read): with ``h`` None
    SeasonalBaseline's (counts in readings), else SeasonalProfile's (each reading weighs ``h``
    hours, its ``_learn_timed``)."""
    lv, sp, nn = B  # views: updated in place
    if h is None:
        n_res, inc_res, n3, inc3 = nn[:, 3], 1, nn[:, :3], 1
    else:
        n_res, inc_res, inc3 = _timed_n(nn[:, 3], h), h, h[:, None]
        n3 = _timed_n(nn[:, :3], inc3)
    res = gate & has_e
    _, s3 = winsorised_step(lv[:, 3], sp[:, 3], n_res, x - level, res_alpha, track_level=False)
    sp[:, 3] = np.where(res, s3, sp[:, 3])
    nn[:, 3] = np.where(res, pmin(nn[:, 3] + inc_res, 1e9), nn[:, 3])
    g3 = gate[:, None]
    l3, s3 = winsorised_step(lv[:, :3], sp[:, :3], n3, x[:, None], alpha)
    lv[:, :3] = np.where(g3, l3, lv[:, :3])
    sp[:, :3] = np.where(g3, s3, sp[:, :3])
    nn[:, :3] = np.where(g3, pmin(nn[:, :3] + inc3, 1e9), nn[:, :3])


def _timed_n(n: np.ndarray, h: np.ndarray) -> np.ndarray:
    """SeasonalProfile._learn_timed's count in readings of weight ``h`` (inf: no weight)."""
    return np.where(h > 0, n / h, np.where(n == 0, 0.0, np.inf))


def _robust_learn(S: np.ndarray, f: int, gate: np.ndarray, x: np.ndarray, alpha: float, clip: float) -> None:
    """RobustLevel.learn where ``gate``; its level, spread, n are rows f, f+1, f+2 of ``S``."""
    level, spread = winsorised_step(S[f], S[f + 1], S[f + 2], x, alpha, clip)
    S[f] = np.where(gate, level, S[f])
    S[f + 1] = np.where(gate, spread, S[f + 1])
    S[f + 2] = np.where(gate, S[f + 2] + 1, S[f + 2])


def _robust_state(s: np.ndarray, f: int) -> list[float]:
    return [float(s[f]), float(s[f + 1]), float(s[f + 2])]


def _robust_restore(s: np.ndarray, f: int, v: list) -> None:
    s[f], s[f + 1], s[f + 2] = float(v[0]), float(v[1]), int(v[2])


def _rounds(rows: np.ndarray) -> list[np.ndarray]:
    """Input positions split into rounds: round k holds each device's k-th reading.

    Findings are ordered by input position afterwards, so the order inside a round is free.
    """
    n = rows.size
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    first = np.ones(n, bool)
    first[1:] = srt[1:] != srt[:-1]
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    # within a round, in row order: gathers and scatters then walk memory forwards (faster)
    by_rank = order[np.argsort(rank[order], kind="stable")]
    return np.split(by_rank, np.cumsum(np.bincount(rank))[:-1])
