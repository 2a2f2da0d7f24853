"""NAB's reference detectors (bench/nab_reference) on series whose answer can be worked out, and the
calibration bench's fit."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import numpy as np
import pytest

from bench.bench_nab_reference import fit, loo_errors, paired_bootstrap
from bench.nab_reference.relative_entropy import RelativeEntropy, T, chi2_isf, kl_statistic
from bench.nab_reference.skyline import EtsySkyline, Ewm, LineFit, mad_sorted, median_sorted
from bench.nab_reference.windowed_gaussian import WINDOW, WindowedGaussian

T0 = datetime(2014, 1, 1)


def stamps(n: int, minutes: int = 5) -> list[datetime]:
    return [T0 + timedelta(minutes=minutes * i) for i in range(n)]


def phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


# -- windowed Gaussian ------------------------------------------------------------------------

def test_windowed_gaussian_scores_before_learning_the_reading():
    d = WindowedGaussian(0, 0, 0)
    assert d.handle_record(T0, 5.0) == 0.0  # empty window
    for v in [10.0, 12.0] * 50:  # the window: 5 and 50 x (10, 12)
        d.handle_record(T0, v)
    w = [5.0] + [10.0, 12.0] * 50
    mean, std = float(np.mean(w)), float(np.std(w))
    for v in (mean, mean + std, mean - 2 * std, 40.0):
        assert d.handle_record(T0, v) == pytest.approx(phi(abs(v - mean) / std), abs=1e-12)
        w.append(v)
        mean, std = float(np.mean(w)), float(np.std(w))
    assert phi(abs(40.0 - 11) / 1) > 0.999999


def test_windowed_gaussian_flat_window_and_sliding_by_hundreds():
    d = WindowedGaussian(0, 0, 0)
    for _ in range(WINDOW):
        d.handle_record(T0, 3.0)
    assert d.handle_record(T0, 3.0) == 0.5  # at the mean of a flat window (spread 1e-6)
    assert d.handle_record(T0, 3.0 + 1e-6) == pytest.approx(phi(1.0), abs=1e-6)
    # the window is full: the next 98 readings (100 in the buffer with the two above) wait
    for _ in range(97):
        assert d.handle_record(T0, 1000.0) == 1.0
    assert d.handle_record(T0, 1000.0) == 1.0  # the 100th buffered reading is scored before the slide
    w = [3.0] * (WINDOW - 100) + [3.0, 3.0 + 1e-6] + [1000.0] * 98
    assert d.mean == pytest.approx(np.mean(w)) and d.std == pytest.approx(np.std(w))


# -- relative entropy -------------------------------------------------------------------------

def test_chi2_threshold():
    assert T == pytest.approx(13.2767, abs=1e-4)  # chi-squared(4) 0.99 point
    assert chi2_isf(0.05, 2) == pytest.approx(-2 * math.log(0.05))


def test_relative_entropy_quantises_on_the_whole_files_range():
    d = RelativeEntropy(0.0, 10.0, 0)  # step 2
    assert [d.quantise(v) for v in (0.0, 0.1, 2.0, 2.1, 9.0, 10.0)] == [0, 1, 1, 2, 5, 5]


def test_relative_entropy_python2_integer_division():
    d = RelativeEntropy(1, 90, 0, py2_ints=True)  # a file of integers 1 ... 90
    assert d.step == 17  # 89 // 5, not 17.8
    assert [d.quantise(v) for v in (1, 17, 18, 35, 86, 90)] == [0, 0, 1, 2, 5, 5]  # floor, not ceil
    flat = RelativeEntropy(10, 14, 0, py2_ints=True)  # range 4: step 4 // 5 = 0, never anomalous
    assert all(flat.handle_record(T0, v) == 0.0 for v in [10, 14] * 100)
    py3 = RelativeEntropy(10, 14, 0)  # step 0.8: the jump to 14 is a new hypothesis
    assert sum(py3.handle_record(T0, v) for v in [10] * 60 + [14] * 60) > 0


def test_relative_entropy_a_distribution_change_makes_a_new_hypothesis():
    d = RelativeEntropy(0.0, 10.0, 0)
    scores = [d.handle_record(T0, v) for v in [1.0] * 60]
    assert scores == [0.0] * 60  # the first window (at the 52nd reading) is the first hypothesis
    assert d.handle_record(T0, 9.0) == 1.0  # mass in a bin the only hypothesis lacks: KL infinite
    # the second 9: 50/52 and 2/52 against 51/52 and 1/52
    p, q = np.array([0, 50, 0, 0, 2]) / 52, np.array([[0, 51, 0, 0, 1]]) / 52
    stat = 2 * 52 * (50 / 52 * math.log(50 / 51) + 2 / 52 * math.log(2))
    assert kl_statistic(p, q)[0] == pytest.approx(stat) and stat < T
    assert d.handle_record(T0, 9.0) == 0.0
    assert len(d.counts) == 2 and d.counts[1] == 2
    rest = [d.handle_record(T0, 9.0) for _ in range(60)]
    assert 0 < sum(rest) < 10  # the drift to all-9s makes a few more hypotheses, not one per reading
    back = [d.handle_record(T0, 1.0) for _ in range(60)]
    # going back to all-1s retraces windows already seen: hypotheses never expire
    assert sum(back) <= sum(rest) + 1 and back[-1] == 0.0


def test_relative_entropy_flat_file_is_never_anomalous():
    d = RelativeEntropy(4.0, 4.0, 0)
    assert all(d.handle_record(T0, 4.0) == 0.0 for _ in range(200))


# -- Etsy Skyline ---------------------------------------------------------------------------

def test_median_and_mad_of_a_sorted_list():
    rng = random.Random(1)
    for n in (1, 2, 3, 8, 51, 200):
        a = sorted(rng.choice([rng.gauss(0, 1), 0.0, 1.0, 2.5]) for _ in range(n))
        med = median_sorted(a)
        assert med == np.median(a)
        assert mad_sorted(a, med) == np.median(np.abs(np.asarray(a) - med))


def test_ewm_matches_the_weighted_formula():
    rng = np.random.default_rng(2)
    xs = rng.normal(10, 3, 300)
    e = Ewm(50.0)
    for n, x in enumerate(xs.tolist(), 1):
        e.add(x)
        w = (50 / 51) ** np.arange(n - 1, -1, -1)
        mean = (w * xs[:n]).sum() / w.sum()
        assert e.mean == pytest.approx(mean, rel=1e-12)
        if n > 1:
            var = (w * (xs[:n] - mean) ** 2).sum() / w.sum() * w.sum() ** 2 / (w.sum() ** 2 - (w ** 2).sum())
            assert e.std() == pytest.approx(math.sqrt(var), rel=1e-9)
        else:
            assert math.isnan(e.std())


def test_line_fit_matches_polyfit():
    rng = np.random.default_rng(3)
    t = 1.4e9 + 300.0 * np.arange(500)
    y = 0.001 * (t - t[0]) + rng.normal(0, 2, 500)
    fit_ = LineFit()
    for a, b in zip(t.tolist(), y.tolist()):
        fit_.add(a, b)
    res, std = fit_.residuals(t[-3:].tolist(), y[-3:].tolist())
    slope, icpt = np.polyfit(t - t[0], y, 1)
    full = y - (slope * (t - t[0]) + icpt)
    assert res == pytest.approx(full[-3:].tolist(), abs=1e-9)
    assert std == pytest.approx(np.std(full), rel=1e-9)


def test_skyline_votes_on_a_spike():
    d = EtsySkyline(0, 0, 0)
    ts = stamps(31)
    for t, v in zip(ts[:30], [10.0, 11.0] * 15):
        assert d.handle_record(t, v) >= 0.0
    score = d.handle_record(ts[30], 100.0)
    votes = d.votes()
    # median 11, deviations fifteen 1s, fifteen 0s and 89: MAD 1, 89 > 6
    assert votes[0]
    # no readings 23-24 h ago
    assert not votes[1]
    # tail (100 + 11 + 10) / 3 = 40.3 against the whole history's mean 13.5 and std 16.2: under 3 std
    assert not votes[2]
    # the last reading alone against the mean and std of the 30 before it (10.5, 0.51)
    assert votes[4]
    # tail 40.3 in 15 bins over [10, 100] (width 6): bin 5, empty
    assert votes[6]
    assert score == sum(votes) / 8


def test_skyline_first_hour_average_looks_at_the_hour_a_day_ago():
    d = EtsySkyline(0, 0, 0)
    ts = stamps(300)  # 25 h at 5 minutes
    rng = random.Random(4)
    for t in ts[:297]:
        d.handle_record(t, 5.0 + rng.uniform(-0.1, 0.1))
    for t in ts[297:]:
        d.handle_record(t, 7.0)
    assert d.votes()[1]  # tail 7 vs the hour a day ago: 5 +- 0.06
    # the last reading is at 24 h 55 min: the hour a day ago is readings 11 ... 22 (55 to 110 min)
    d2 = EtsySkyline(0, 0, 0)
    for i, t in enumerate(ts[:297]):
        d2.handle_record(t, (7.0 if 11 <= i <= 22 else 5.0) + rng.uniform(-0.1, 0.1))
    for t in ts[297:]:
        d2.handle_record(t, 7.0)
    assert not d2.votes()[1]  # ... holds 7s: not anomalous, whatever came in between


def test_skyline_python2_tail_is_an_integer_mean():
    d, d2 = EtsySkyline(0, 0, 0), EtsySkyline(0, 0, 0, py2_ints=True)
    for t, v in zip(stamps(3), [1.0, 1.0, 2.0]):
        d.handle_record(t, v)
        d2.handle_record(t, v)
    assert d.tail() == pytest.approx(4 / 3) and d2.tail() == 1.0


def test_skyline_histogram_ignores_a_low_outlier_above_the_minimum():
    # NAB's loop only checks the first bin for tail <= its lower edge
    d = EtsySkyline(0, 0, 0)
    ts = stamps(203)
    for t, v in zip(ts, [0.0] + [50.0 + (i % 7) for i in range(199)] + [1.0, 1.0, 1.0]):
        d.handle_record(t, v)
    assert not d.votes()[6]  # tail 1.0 sits in bin 0, holding 4 readings, but above its edge 0.0


# -- calibration bench -----------------------------------------------------------------------

def test_fit_and_leave_one_out():
    a, b = fit([0.0, 1.0, 2.0, 3.0], [2.0, 5.0, 8.0, 11.0])
    assert (a, b) == pytest.approx((2.0, 3.0))
    assert loo_errors([0.0, 1.0, 2.0, 3.0], [2.0, 5.0, 8.0, 11.0]) == pytest.approx([0, 0, 0, 0], abs=1e-12)
    a, b = fit([0.0, 1.0, 2.0], [0.0, 1.0, 3.0])
    assert (a, b) == pytest.approx((-1 / 6, 1.5))
    assert loo_errors([0.0, 1.0, 2.0], [0.0, 1.0, 3.0]) == pytest.approx([1.0, -0.5, 1.0])
    with pytest.raises(ValueError):
        fit([1.0, 1.0], [0.0, 2.0])


def test_paired_bootstrap_against_itself_and_a_blind_detector():
    from streams.nab import scoring
    from streams.nab.scoring import Series

    def files(hit):
        out = []
        for k in range(6):
            scores = np.zeros(300)
            if hit:
                scores[205] = 1.0  # early in the window
            out.append(Series(f"c/f{k}.csv", scores, ((200, 240),), 45))
        return out

    seeing, blind = files(True), files(False)
    assert paired_bootstrap(seeing, seeing, 50) == (0.0, 0.0)  # never ahead of itself
    share, lead = paired_bootstrap(seeing, blind, 50)
    w = scoring.f(-36 / 41) / scoring.f(-1.0)  # the hit's weight, 36 rows before the window's end
    assert share == 1.0 and lead == pytest.approx(50 * (1 + w))
