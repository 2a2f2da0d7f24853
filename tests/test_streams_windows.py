"""Event-time window assignment and the per-partition watermark."""

from __future__ import annotations

import numpy as np

from streams.watermark import Watermark
from streams.windows import closed, hopping, sliding_counts, tumbling


def test_tumbling_windows_on_event_time():
    assert tumbling(np.array([0.0, 9.99, 10.0, 25.0]), 10.0).tolist() == [0.0, 0.0, 10.0, 20.0]


def test_hopping_windows_each_event_in_size_over_step_windows():
    starts = hopping(np.array([12.0]), size=30.0, step=10.0)
    assert starts.tolist() == [[10.0, 0.0, -10.0]]
    assert all(s <= 12.0 < s + 30.0 for s in starts[0])


def test_sliding_counts_per_key_only_look_back():
    t = np.array([0.0, 5.0, 12.0, 0.0, 100.0])
    keys = np.array(["a", "a", "a", "b", "b"])
    assert sliding_counts(t, keys, 10.0).tolist() == [1, 2, 2, 1, 1]


def test_window_closes_after_watermark_passes_end_plus_grace():
    assert not closed(60.0, 100.0, 60.0) and closed(60.0, 120.0, 60.0)


def test_watermark_is_max_minus_lateness_and_ignores_non_finite():
    wm = Watermark(allowed_lateness_s=30.0, grace_s=60.0)
    late, too = wm.classify(np.array([1000.0, np.nan]))
    assert late.tolist() == [False, False] and too.tolist() == [False, True] and wm.value == 970.0
    late, too = wm.classify(np.array([960.0, 909.0, 1200.0]))
    assert late.tolist() == [True, False, False] and too.tolist() == [False, True, False]
    assert wm.value == 1170.0
