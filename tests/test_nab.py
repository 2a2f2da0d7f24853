"""NAB: the scoring rules on hand-made series, the runner's output format, the commands."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil

import numpy as np
import pytest

from streams import cli
from streams.nab import runner, scoring
from streams.nab.detector import NabDetector
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
    args = ap.parse_args(["nab-score", "--results", str(tmp_path / "res"), "--data", str(tmp_path / "data")])
    assert args.handler(args, None) == 0
    out = capsys.readouterr().out
    assert "standard" in out and "realTraffic=" in out
