"""NAB reference detectors CAD OSE and KNN CAD: the behaviour the calibration relies on."""

from __future__ import annotations

import numpy as np
import pytest

from bench.nab_reference import REFERENCES
from bench.nab_reference.cad_ose import CadOse, _Py2Order, py2_tuple_hash
from bench.nab_reference.knncad import KnnCad

PATTERN = [0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1]


def run(det, values):
    return np.array([det.handle_record(None, v) for v in values])


def test_python2_tuple_hash_and_dict_order():
    assert py2_tuple_hash(()) == 3527539  # == hash(()) on every CPython
    assert py2_tuple_hash((1, 2)) == 3713081631934410656  # Python 2.7 / < 3.8, 64-bit
    order = _Py2Order()
    for k in (8, 0):
        order.add(k)
    assert order.keys() == [8, 0]  # 0 collides with 8 in the 8-slot table and probes to slot 1
    order = _Py2Order()
    for k in range(10, 0, -1):
        order.add(k)
    assert order.keys() == list(range(1, 11))  # resized to 32 slots: small ints in key order


def test_cad_ose_learns_a_repeating_pattern_and_a_new_pattern_scores_high():
    values = PATTERN * 120 + [7, 0, 7, 0, 7, 0]
    s = run(CadOse(0, 7, 300), values)
    learned = s[len(PATTERN) * 110:len(PATTERN) * 120]
    assert learned.max() < 0.3  # every context is known: only ambiguous crossings stay selected-not-active
    assert s[-6:].max() == 1.0  # the first unseen transition: nothing active, every potential context new
    assert s[len(PATTERN) * 120 + 1:].max() == 0.0  # and the rest period holds the output at 0 after it


def test_cad_ose_prediction_variant_scores_0_on_a_predicted_repeat():
    values = PATTERN * 60 + [7, 0]
    s = run(CadOse(0, 7, 300, prediction=True), values)
    assert s[len(PATTERN) * 50:len(PATTERN) * 60].max() == 0.0
    assert s[-2] == 1.0


def test_cad_ose_rest_period_and_leading_quiet_records():
    values = list(np.random.default_rng(1).integers(0, 8, 400))
    s = run(CadOse(0, 7, 100), values)  # rest = 100 / 5 = 20 records
    assert s[:20].max() == 0.0  # NAB's history starts with a 1.0
    raw = run(CadOse(0, 7, 0), values)  # rest 0: NAB's history[-0:] is all of it, never quiet
    assert raw.max() == 0.0
    highs = np.flatnonzero(s >= 0.75)
    assert len(highs) and all(s[h + 1:h + 20].max() < 0.75 for h in highs)


def test_cad_ose_matches_nab_code_and_python2_tie_breaking_matters():
    values = list(np.round(np.sin(np.arange(400) / 5.0) * 3 + np.random.default_rng(3).normal(0, 0.6, 400), 2))
    py3 = run(CadOse(min(values), max(values), 60, python2=False), values)
    # recorded from NAB's context_ose code (Python 3 port) run under Python 3.11 on the same values
    assert py3.sum() == pytest.approx(110.573916902, abs=1e-6)
    assert list(np.flatnonzero(py3 >= 0.75)) == [72, 143]
    py2 = run(CadOse(min(values), max(values), 60), values)
    # the same algorithm, ties among equal-count contexts broken by Python 2's hashes: other neurons
    assert py2.sum() == pytest.approx(102.065005748, abs=1e-6)
    assert list(np.flatnonzero(py2 >= 0.75)) == [72, 127, 143, 191]


def test_knncad_scores_a_point_far_from_its_calibration_neighbours_high():
    rng = np.random.default_rng(0)
    n, p = 1400, 300
    values = list(np.sin(np.arange(n) * 2 * np.pi / 50) + rng.normal(0, 0.05, n))
    values[1200] += 5.0  # (this seed's noise alone last alarms at 1061; its hold ends at 1121)
    s = run(KnnCad(min(values), max(values), p), values)
    assert s[:p - 1].max() == 0.0  # probation
    assert s[1200] == 1.0  # beyond every calibration score
    assert np.all(s[1201:1201 + p // 5] == 0.5)  # NAB's hold after an alarm
    free = s[p:1190][s[p:1190] != 0.5]
    assert 0.3 < np.median(free) < 0.7  # normal points sit inside the calibration distribution


def test_registry_builds_both():
    by_name = {r.name: r for r in REFERENCES}
    assert isinstance(by_name["contextOSE"].make(0.0, 1.0, 150), CadOse)
    assert isinstance(by_name["knncad"].make(0.0, 1.0, 150), KnnCad)
