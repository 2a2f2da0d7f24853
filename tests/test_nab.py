"""NAB: the scoring rules on hand-made series, the runner's output format, the commands."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from streams import cli
from streams.detectors.baseline import SeasonalBaseline
from streams.detectors.likelihood import AnomalyLikelihood
from streams.nab import crossval, runner, scoring
from streams.nab.detector import KnownExpectationBaseline, NabDetector, NabKnobs
from tests.conftest import SHARED

NAB = SHARED / "data" / "nab"
STD = scoring.PROFILES[0]


def series(n, windows, hits, probation=0):
    s = np.zeros(n)
    s[list(hits)] = 1.0
    return scoring.Series("c/f.csv", s, tuple(windows), probation)


def test_scaled_sigmoid_matches_nab():
    assert scoring.f(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert scoring.f(0.0) == 0.0 and scoring.f(3.5) == -1.0


def test_true_positive_early_beats_late_and_only_the_first_counts():
    early = scoring.file_score(series(100, [(40, 59)], [40, 41, 50]), 0.5, STD)
    late = scoring.file_score(series(100, [(40, 59)], [58]), 0.5, STD)
    assert early == pytest.approx(1.0) and 0 < late < early


def test_missed_window_and_false_positives_cost():
    assert scoring.file_score(series(100, [(40, 59)], []), 0.5, STD) == -1.0
    before = scoring.file_score(series(100, [(40, 59)], [10, 40]), 0.5, STD)
    assert before == pytest.approx(1.0 - 0.11)  # FP before any window: -A_FP
    just_after = scoring.file_score(series(100, [(40, 59)], [40, 61]), 0.5, STD)
    far_after = scoring.file_score(series(200, [(40, 59)], [40, 150]), 0.5, STD)
    assert 1.0 - 0.11 < far_after + 1e-9 and just_after > far_after  # far FPs cost the full A_FP
    assert scoring.file_score(series(100, [(40, 59)], [5], probation=15), 0.5, STD) == -1.0  # probation


def test_normalisation_null_is_0_perfect_is_100():
    perfect = [series(100, [(40, 59)], [40])]
    assert scoring.normalised(perfect, 0.5, STD)[1] == pytest.approx(100.0)
    assert scoring.normalised([series(100, [(40, 59)], [])], 0.5, STD)[1] == pytest.approx(0.0)


def test_threshold_is_optimised_over_all_files():
    a = scoring.Series("a", np.array([0, 0, 0.9, 0, 0.6, 0]), ((4, 5),), 0)
    b = scoring.Series("b", np.array([0, 0.7, 0, 0, 0, 0]), ((1, 2),), 0)
    thr = scoring.best_threshold([a, b], STD)
    assert 0.6 < thr <= 0.7 or thr <= 0.6  # any threshold catching both windows' first points
    assert scoring.normalised([a, b], thr, STD)[1] > scoring.normalised([a, b], 0.8, STD)[1]


def test_detector_is_causal_and_bounded():
    rng = np.random.default_rng(1)
    xs = rng.normal(10, 1, 3000)
    xs[2000:] += 8
    a, b = NabDetector(), NabDetector()
    full = [a.score_learn_one(600.0 * i, x) for i, x in enumerate(xs)]
    prefix = [b.score_learn_one(600.0 * i, x) for i, x in enumerate(xs[:2100])]
    assert full[:2100] == prefix  # what comes later never changes an earlier score
    assert max(full[2000:2100]) >= 0.5 and max(full[1000:2000]) < 0.5


def test_detector_reports_a_spike_once_and_stays_quiet_on_its_noise():
    rng = np.random.default_rng(2)
    xs = rng.normal(50, 2, 3000)
    clean = NabDetector()
    assert max(clean.score_learn_one(300.0 * i, x) for i, x in enumerate(xs)) == 0.0
    xs[2500:2505] += 40  # a burst far outside the noise
    det = NabDetector()
    scores = np.array([det.score_learn_one(300.0 * i, x) for i, x in enumerate(xs)])
    hits = np.flatnonzero(scores > 0)
    assert hits.tolist() and 2500 <= hits[0] <= 2510 and len(hits) == 1  # one alarm, then cooldown
    assert 0.4 <= scores[hits[0]] <= 1.0


def test_nab_hot_path_learns_the_same_numbers_as_the_stream_detectors():
    """NAB mode's fused steps (baseline learning from the looked-up expectation, likelihood
    score-and-learn in one pass) must not drift from the stream's own classes."""
    rng = np.random.default_rng(5)
    ts = np.cumsum(rng.uniform(60, 900, 4000))
    xs = 20 + 5 * np.sin(ts / 86400 * 2 * np.pi) + rng.normal(0, 1, 4000)
    plain, fused = SeasonalBaseline(), KnownExpectationBaseline()
    for t, x in zip(ts.tolist(), xs.tolist()):
        plain.learn_one(t, x)
        fused.learn_expected(t, x, fused.expected(t))
    assert fused.state() == plain.state()
    a, b = AnomalyLikelihood(long=50, learn_n=20), AnomalyLikelihood(long=50, learn_n=20)
    raws = np.clip(rng.normal(0.1, 0.05, 400), 0, 1).tolist() + [0.9] * 5
    two_steps = []
    for r in raws:
        two_steps.append(a.score_one(r))
        a.learn_one(r)
    assert [b.score_learn_one(r) for r in raws] == two_steps and max(two_steps) > 0.999


def _reports(knobs, xs):
    det = NabDetector(knobs)
    return [i for i, x in enumerate(xs) if det.score_learn_one(300.0 * i, x) > 0]


def test_joint_evidence_reports_a_modest_step_sooner_without_more_noise_alarms():
    """Adding the two views' evidence catches what both see a little (a modest step) sooner than
    the larger view alone at the same gate, and alarms on pure noise no more than the previous
    detector (``either`` at gate 0.4)."""
    joint, either, previous = NabKnobs(), NabKnobs(combine="either"), NabKnobs(combine="either", gate=0.4)
    noise_alarms = {"joint": 0, "previous": 0}
    sooner = 0
    for seed in range(5):
        xs = np.random.default_rng(seed).normal(50, 1, 3000)
        noise_alarms["joint"] += len(_reports(joint, xs))
        noise_alarms["previous"] += len(_reports(previous, xs))
        xs[2500:2520] += 3.5
        first_joint = next(i for i in _reports(joint, xs) if i >= 2400)
        first_either = next((i for i in _reports(either, xs) if i >= 2400), 10**9)
        assert 2500 <= first_joint <= 2520 and first_joint <= first_either
        sooner += first_joint < first_either
    assert sooner >= 2 and noise_alarms["joint"] <= noise_alarms["previous"]
    with pytest.raises(ValueError):
        NabDetector(NabKnobs(combine="mean"))


def test_held_out_threshold_is_chosen_without_the_scored_file():
    """Two files that want different thresholds: in-sample one threshold serves both, held out
    each file is scored with the threshold the other one prefers."""
    a = scoring.Series("x/a.csv", np.array([0, 0, 0, 0.9, 0, 0, 0, 0, 0, 0.5]), ((8, 9),), 0)
    b = scoring.Series("y/b.csv", np.array([0, 0, 0, 0, 0, 0, 0, 0, 0.8, 0]), ((7, 9),), 0)
    thr = scoring.best_threshold([a, b], STD)
    in_sample = scoring.normalised([a, b], thr, STD)[1]
    out = crossval.nested({"one": [a, b]}, crossval.by_file)
    assert out.score < in_sample
    # leaving a out, b alone wants a threshold above a's 0.5 window hit: a's window is missed
    assert out.raw["x/a.csv"] == pytest.approx(scoring.file_score(a, 0.8, STD))
    assert set(out.groups) == {"x/a.csv", "y/b.csv"}


def test_nested_choice_picks_the_setting_best_on_the_other_groups():
    hit = scoring.Series("c/f.csv", np.array([0, 0, 0, 1.0, 0]), ((3, 4),), 0)
    miss = scoring.Series("c/f.csv", np.zeros(5), ((3, 4),), 0)
    hit2 = scoring.Series("d/g.csv", np.array([0, 0, 1.0, 0, 0]), ((2, 4),), 0)
    miss2 = scoring.Series("d/g.csv", np.zeros(5), ((2, 4),), 0)
    out = crossval.nested({"good": [hit, hit2], "bad": [miss, miss2]}, crossval.category)
    assert out.picks == {"c": "good", "d": "good"} and out.score == pytest.approx(100.0)


def test_runner_writes_nab_format_and_scores_a_real_file(tmp_path):
    data = tmp_path / "data"
    for rel in ("realTraffic/speed_7578.csv", "artificialNoAnomaly/art_daily_small_noise.csv"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / rel, data / rel)
    labels = json.loads((NAB / "combined_windows.json").read_text())
    (tmp_path / "combined_windows.json").write_text(json.dumps(
        {k: v for k, v in labels.items() if k in ("realTraffic/speed_7578.csv", "artificialNoAnomaly/art_daily_small_noise.csv")}))
    out = tmp_path / "out"
    stats = runner.run(data, out)
    res = out / "realTraffic" / "citybrain_speed_7578.csv"
    rows = list(csv.DictReader(res.open()))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"]
    assert len(rows) == sum(1 for _ in (data / "realTraffic/speed_7578.csv").open()) - 1
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in rows)
    assert stats["points"] > 5000 and stats["points_per_s"] > 5000
    rep = scoring.report(out, data)
    assert rep["standard"]["realTraffic"] > 30  # catches some of speed_7578's four windows


def test_commands_register_and_run(tmp_path, capsys):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command")
    cli.register(sub, argparse.ArgumentParser(add_help=False))
    data = tmp_path / "data" / "realTraffic"
    data.mkdir(parents=True)
    shutil.copy(NAB / "data/realTraffic/speed_7578.csv", data)
    (tmp_path / "combined_windows.json").write_text((NAB / "combined_windows.json").read_text())
    args = ap.parse_args(["nab", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "res")])
    assert args.handler(args, None) == 0
    args = ap.parse_args(["nab-score", "--results", str(tmp_path / "res"), "--data", str(tmp_path / "data"),
                          "--cross-validate"])
    assert args.handler(args, None) == 0
    out = capsys.readouterr().out
    assert "standard" in out and "realTraffic=" in out
    assert "leave-one-file-out=" in out and "leave-one-category-out=" in out


def test_heavy_tailed_noise_alarms_less_with_the_ranks_than_with_the_gaussian_alone():
    """iid lognormal noise, no anomaly: the Gaussian on averaged raw scores finds every big spike
    a 1e-5 event in both views at once; bounded by each view's empirical tail (the last 2,000
    averages) the detector reports about a third less, and a view's evidence is capped by its
    rank (a level reached c of K times has a tail probability of at least c / K)."""
    reports = {"ranks": 0, "gaussian": 0}
    for seed in range(3):
        xs = np.random.default_rng(seed).lognormal(0, 1, 10_000)
        reports["ranks"] += len(_reports(NabKnobs(), xs))
        reports["gaussian"] += len(_reports(NabKnobs(ranks=0), xs))
    assert reports["ranks"] <= 40 < 50 <= reports["gaussian"]
    al = AnomalyLikelihood(long=50, learn_n=20, ranks=100)
    for r in [0.1] * 60 + [0.9] * 10 + [0.1] * 60:
        al.score_learn_one(r)
        al.remember()
    al.score_learn_one(0.9)  # its average was reached by some of the 100 remembered averages
    reached = sum(v >= al.history[-1] for v in al.ranked)
    assert 0 < reached < 100
    cap = math.log(reached / 100) / math.log(1e-10)
    assert al.capped(1.0) == pytest.approx(cap) and al.capped(cap / 2) == cap / 2
    assert AnomalyLikelihood().capped(0.9) == 0.9  # no ranks: unchanged


def rescored_best_threshold(series, p):
    """The definition: rescore every file at every distinct score, keep the best (lowest of equals)."""
    candidates = np.unique(np.concatenate([s.scores[s.probation:] for s in series] + [np.array([1.01])]))
    best, best_raw = 1.01, -math.inf
    for thr in candidates[candidates > 0].tolist():
        raw = sum(scoring.file_score(s, thr, p) for s in series)
        if raw > best_raw:
            best, best_raw = thr, raw
    return best


def test_threshold_sweep_finds_what_rescoring_finds():
    rng = np.random.default_rng(5)
    for trial in range(8):
        files = []
        for k in range(4):
            scores = rng.random(400) ** 3
            if trial % 2:
                scores = np.round(scores, 2)  # ties between points in and out of windows
            wins = ((150, 180), (300, 320)) if k % 2 else ((90, 110),) if k else ()
            for lo, _ in wins:
                scores[lo + rng.integers(0, 15)] = rng.uniform(0.5, 1.0)
            if trial == 7:
                scores[:] = 0.0  # nothing fires: the null threshold
            files.append(scoring.Series(f"c{k % 2}/f{k}.csv", scores, wins, 60))
        for p in scoring.PROFILES:
            assert scoring.best_threshold(files, p) == rescored_best_threshold(files, p)


def test_unreadable_files_are_named_with_line_and_problem_and_the_rest_are_scored(tmp_path, capsys):
    data = tmp_path / "data" / "cat"
    data.mkdir(parents=True)
    shutil.copy(NAB / "data/realTraffic/speed_7578.csv", data / "good.csv")
    shutil.copy(NAB / "data/realTraffic/speed_t4013.csv", data / "repeats.csv")  # a time repeats: scored
    ok = "timestamp,value\n2014-04-01 00:00:00,1.0\n"
    bad = {"date.csv": ok + "01/04/2014 00:05,2\n", "value.csv": ok + "2014-04-01 00:05:00,abc\n",
           "nan.csv": ok + "2014-04-01 00:05:00,nan\n",
           "header.csv": "time,v\n2014-04-01 00:00:00,1\n", "empty.csv": "timestamp,value\n",
           "missing.csv": ok + "2014-04-01 00:05:00,\n"}
    for name, text in bad.items():
        (data / name).write_text(text)
    ap = argparse.ArgumentParser()
    cli.register(ap.add_subparsers(dest="command"), argparse.ArgumentParser(add_help=False))
    args = ap.parse_args(["nab", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "res")])
    assert args.handler(args, None) == 1  # a script running it notices
    assert (tmp_path / "res" / "cat" / "citybrain_good.csv").exists()
    assert sorted(p.name for p in (tmp_path / "res" / "cat").iterdir()) == ["citybrain_good.csv", "citybrain_repeats.csv"]
    kept = {Path(r["file"]).name: (int(r["line"]), r["problem"])
            for r in csv.DictReader((tmp_path / "res" / runner.REJECTED).open())}
    assert kept == {"date.csv": (3, "timestamp '01/04/2014 00:05' is not 'YYYY-MM-DD HH:MM:SS'"),
                    "value.csv": (3, "value 'abc' is not a number"), "nan.csv": (3, "value 'nan' is not finite"),
                    "header.csv": (1, "header ['time', 'v'] has no 'timestamp' and 'value' columns"),
                    "empty.csv": (0, "no data rows"), "missing.csv": (3, "no value")}
    err = capsys.readouterr().err
    assert "date.csv:3: timestamp" in err and "6 file(s) not scored" in err
