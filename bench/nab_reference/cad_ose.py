"""CAD OSE (Contextual Anomaly Detector, Open Source Edition; NAB name ``contextOSE``), reimplemented.

The algorithm (M. Smirnov, 2016; numenta/NAB ``nab/detectors/context_ose/``) in short:

- A value becomes three *sensor facts*: it is scaled into 0..7 by the file's min and max and
  each of its 3 bits gives a fact ``2 * bit_position + bit``.
- A *context* joins a left semi-context (a set of facts of the previous step: sensor facts and
  *neuron* facts, the active contexts of the previous step) and a right semi-context (sensor
  facts of the current step). Each step stores the zero-level context (the whole previous left
  group -> the whole current sensor set) and, when that one is new, the crossings of it with the
  stored zero-level contexts that are partly matched.
- A context whose left part is wholly matched by the previous step is *selected*; when its right
  part is wholly matched by the current sensor facts it is *active* (its count goes up). The 15
  active contexts with the highest counts become the next step's neuron facts.
- Score = (1 - active / selected + new contexts / potential new contexts) / 2; after a score of
  0.75 or more, the output is held at 0 for ``probation / 5`` records ("rest period"; the history
  starts with a 1.0, so the first records are quiet too).

What decides the scores beyond the algorithm's outline, kept here as NAB's code has it:

- Semi-contexts are keyed by the *hash* of their fact tuple (two tuples with one hash are one
  semi-context), and ties among active contexts of equal count are broken by the left and right
  hashes. NAB's published results come from Python 2.7 (64-bit), so by default the tuple hash is
  Python 2's and a left semi-context's contexts are visited in Python 2's dict order (the order of
  potential new contexts fixes the ids they get, and ids are neuron facts). ``python2=False``
  gives Python 3.8+'s tuple hash and insertion order instead.
- When no zero-level context was created this step, context id 0 is skipped while updating
  (NAB compares the id with ``False``, which equals 0).
- ``prediction=True`` gives the 2016 version first merged into NAB (``nab/detectors/cad_ose/``):
  sensor facts offset by 65536, and the score is 0 whenever every sensor fact was predicted by
  the most reliable wholly matched contexts of the previous step. The later version (the
  author's repository and NAB's ``context_ose/``) dropped that; it is the default.
"""

from __future__ import annotations

from datetime import datetime

_MASK64 = (1 << 64) - 1
_NEURON = 2**31  # neuron facts: 2**31 + context id


def _signed(x: int) -> int:
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


def py2_tuple_hash(items: tuple[int, ...]) -> int:
    """Python 2.7's hash of a tuple of (small, non-negative) ints on a 64-bit build."""
    x, mult, n = 0x345678, 1000003, len(items)
    for j, y in enumerate(items):
        x = ((x ^ y) * mult) & _MASK64
        mult += 82520 + 2 * (n - 1 - j)
    x = _signed(x + 97531)
    return -2 if x == -1 else x


class _Py2Order:
    """The slot order of a Python 2.7 dict with non-negative int keys (no deletions)."""

    __slots__ = ("table", "fill")

    def __init__(self) -> None:
        self.table: list[int | None] = [None] * 8
        self.fill = 0

    def _place(self, table: list[int | None], key: int) -> None:
        mask = len(table) - 1
        i = key & mask
        perturb = key
        while table[i & mask] is not None:
            i = (i << 2) + i + perturb + 1
            perturb >>= 5
        table[i & mask] = key

    def add(self, key: int) -> None:
        self._place(self.table, key)
        self.fill += 1
        if self.fill * 3 >= len(self.table) * 2:
            size = 8
            while size <= 4 * self.fill:
                size <<= 1
            new: list[int | None] = [None] * size
            for k in self.table:
                if k is not None:
                    self._place(new, k)
            self.table = new

    def keys(self) -> list[int]:
        return [k for k in self.table if k is not None]


class _Semi:
    """A semi-context: its size, the facts of it matched by the last crossing, and (left ones)
    its contexts as (right semi-context id, context id) in the order NAB's dict visits them."""

    __slots__ = ("size", "matched", "count", "links", "order", "py2")

    def __init__(self, size: int, py2: bool | None = None) -> None:
        self.size = size
        self.matched: list[int] = []
        self.count = 0
        self.links: dict[int, int] = {}
        self.order: list[tuple[int, int]] = []
        self.py2 = _Py2Order() if py2 else None

    def link(self, right_id: int, ctx_id: int) -> None:
        self.links[right_id] = ctx_id
        if self.py2 is None:
            self.order.append((right_id, ctx_id))
        else:
            self.py2.add(right_id)
            self.order = [(k, self.links[k]) for k in self.py2.keys()]


class CadOse:
    """NAB's contextOSE detector with NAB's parameters (``restPeriod = probation / 5``)."""

    def __init__(self, input_min: float, input_max: float, probation: int, *, base_threshold: float = 0.75,
                 max_left_semi: int = 7, max_active: int = 15, bits: int = 3,
                 python2: bool = True, prediction: bool = False) -> None:
        self.min = float(input_min)
        self.max_bin = 2.0**bits - 1.0
        full = float(input_max) - self.min
        self.step_size = (full if full != 0.0 else self.max_bin) / self.max_bin
        self.bits = bits
        self.rest = int(probation / 5.0)
        self.base_threshold = base_threshold
        self.max_left_semi = max_left_semi
        self.max_active = max_active
        self.py2 = python2
        self.prediction = prediction
        self.offset = 65536 if prediction else 0
        self.hash = py2_tuple_hash if python2 else hash
        # semi-contexts: [0] left, [1] right
        self.ids: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.semis: tuple[list[_Semi], list[_Semi]] = ([], [])
        self.by_fact: tuple[dict[int, list[_Semi]], dict[int, list[_Semi]]] = ({}, {})
        self.crossed: list[list[_Semi]] = [[], []]
        # contexts, by id
        self.ctx_count: list[int] = []
        self.ctx_zero: list[bool] = []
        self.ctx_hashes: list[tuple[int, int]] = []
        self.ctx_right: list[tuple[int, ...]] = []
        self.ctx_tries: list[int] = []  # prediction variant: right facts offered / matched
        self.ctx_hits: list[int] = []
        self.new_ctx: int | None = None
        self.left_group: tuple[int, ...] = ()
        self.predicted: set[int] = set()
        self.history_len = 1  # NAB's score history starts with a 1.0
        self.last_high = 0  # index in the history of the last score >= base_threshold

    # -- context memory -------------------------------------------------------------------------

    def _semi(self, side: int, facts: tuple[int, ...]) -> tuple[int, int]:
        h = self.hash(facts)
        sid = self.ids[side].get(h)
        if sid is None:
            sid = self.ids[side][h] = len(self.semis[side])
            semi = _Semi(len(facts), self.py2 if side == 0 else None)
            self.semis[side].append(semi)
            index = self.by_fact[side]
            for f in facts:
                index.setdefault(f, []).append(semi)
        return sid, h

    def _store(self, left: tuple[int, ...], right: tuple[int, ...], zero: bool) -> bool:
        """Store a context unless there; True when it is new (a zero-level one becomes ``new_ctx``)."""
        lid, lh = self._semi(0, left)
        rid, rh = self._semi(1, right)
        semi = self.semis[0][lid]
        cid = semi.links.get(rid)
        if cid is None:
            cid = len(self.ctx_count)
            semi.link(rid, cid)
            self.ctx_count.append(0)
            self.ctx_zero.append(zero)
            self.ctx_hashes.append((lh, rh))
            self.ctx_right.append(right)
            self.ctx_tries.append(0)
            self.ctx_hits.append(0)
            if zero:
                self.new_ctx = cid
            return True
        if zero:
            self.ctx_zero[cid] = True
        return False

    def _cross(self, side: int, facts: tuple[int, ...]) -> None:
        for semi in self.crossed[side]:
            semi.matched = []
            semi.count = 0
        index = self.by_fact[side]
        for f in facts:
            for semi in index.get(f, ()):
                semi.matched.append(f)
        crossed = []
        for semi in self.semis[side]:
            c = len(semi.matched)
            semi.count = c
            if c:
                crossed.append(semi)
        self.crossed[side] = crossed

    def _update(self, new_flag: bool) -> tuple[list[tuple[int, int, int, int]], int, list]:
        """Selected / active contexts after the right crossing, and the potential new ones."""
        active: list[tuple[int, int, int, int]] = []
        potential: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        selected = 0
        skip = 0 if self.new_ctx is None else self.new_ctx
        right = self.semis[1]
        counts, zero, hashes = self.ctx_count, self.ctx_zero, self.ctx_hashes
        for semi in self.crossed[0]:
            full = semi.count == semi.size
            if not full and not new_flag:
                continue
            short = semi.count <= self.max_left_semi
            for rid, cid in semi.order:
                if cid == skip:
                    continue
                r = right[rid]
                if full:
                    selected += 1
                    if self.prediction:
                        self.ctx_tries[cid] += r.size
                    if r.count > 0:
                        if self.prediction:
                            self.ctx_hits[cid] += r.count
                        if r.count == r.size:
                            counts[cid] += 1
                            lh, rh = hashes[cid]
                            active.append((counts[cid], lh, rh, cid))
                        elif new_flag and zero[cid] and short:
                            potential.append((tuple(semi.matched), tuple(r.matched)))
                elif new_flag and zero[cid] and r.count > 0 and short:
                    potential.append((tuple(semi.matched), tuple(r.matched)))
        self.new_ctx = None
        return active, selected, potential

    def _predict(self) -> set[int]:
        """Prediction variant: the right facts of the most reliable wholly matched contexts."""
        best, chosen = 0.0, []
        for semi in self.semis[0]:
            if semi.count and semi.count == semi.size:
                for _, cid in semi.order:
                    tries = self.ctx_tries[cid]
                    w = self.ctx_hits[cid] / tries if tries > 0 else 0.0
                    if w > best:
                        best, chosen = w, [cid]
                    elif w == best:
                        chosen.append(cid)
        out: set[int] = set()
        for cid in chosen:
            out.update(self.ctx_right[cid])
        return out

    def _step(self, sensors: tuple[int, ...]) -> tuple[float, float]:
        uniq: set = set()
        new_flag = False
        if self.left_group:
            zero_ctx = (self.left_group, sensors)
            uniq.add(zero_ctx)
            new_flag = self._store(*zero_ctx, zero=True)
        self._cross(1, sensors)
        active, selected, potential = self._update(new_flag)
        uniq.update(potential)
        share_active = len(active) / selected if selected > 0 else 0.0
        active.sort()
        neurons = {_NEURON + a[3] for a in active[-self.max_active:]}
        self.left_group = tuple(sorted(set(sensors) | neurons))
        added = sum(self._store(left, right, zero=False) for left, right in potential)
        self._cross(0, self.left_group)
        if self.prediction:
            self.predicted = self._predict()
        added += 1 if new_flag else 0
        share_new = added / len(uniq) if new_flag and uniq else 0.0
        return share_active, share_new

    # -- the detector ---------------------------------------------------------------------------

    def handle_record(self, timestamp: datetime, value: float) -> float:
        level = int((value - self.min) / self.step_size)
        sensors = tuple(sorted({self.offset + 2 * s + ((level >> s) & 1) for s in range(max(self.bits, level.bit_length()))}))
        was_predicted = self.prediction and all(f in self.predicted for f in sensors)
        share_active, share_new = self._step(sensors)
        score = 0.0 if was_predicted else (1.0 - share_active + share_new) / 2.0
        # NAB: max(history[-rest:]) < threshold, the history holding a leading 1.0 (rest 0: all of it)
        window_start = self.history_len - self.rest if self.rest > 0 else 0
        out = score if self.last_high < max(window_start, 0) else 0.0
        if score >= self.base_threshold:
            self.last_high = self.history_len
        self.history_len += 1
        return out
