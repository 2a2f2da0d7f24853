"""The episode state machine (:class:`streams.detectors.episode.Episode`) on arrays.

One matrix per field, one row per reading of the round and one column per detector, so the
episodes of every detector of every device move in a handful of numpy calls. ``None`` is NaN
(all the times it stands for are finite). The caller turns the three event masks into findings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streams.detectors.episode import EpisodeRule
from streams.vector.kernels import pmax

#: field order of the episode state, as :meth:`Episode.state` lists it
FIELDS = ("pending_since", "pending_n", "open_since", "reported", "calm_since", "peak")
PENDING_SINCE, PENDING_N, OPEN_SINCE, REPORTED, CALM_SINCE, PEAK = range(len(FIELDS))


class Rules:
    """The episode rules of a row of detectors, as (d, 1) arrays that broadcast over readings."""

    def __init__(self, rules: list[EpisodeRule]) -> None:
        def col(name: str) -> np.ndarray:
            return np.array([[float(getattr(r, name))] for r in rules])

        self.on, self.off, self.min_count = col("on"), col("off"), col("min_count")
        self.min_duration_s, self.quiet_s, self.step = col("min_duration_s"), col("quiet_s"), col("step")


@dataclass(slots=True)
class Moves:
    """What the update did, per (detector, reading of ``at``): the findings to write, and from when."""

    at: np.ndarray  # readings (round positions) that went through the state machine
    opened: np.ndarray
    raised: np.ndarray  # an open episode's score rose by a material step: re-reported
    closed: np.ndarray
    started: np.ndarray  # open_since of the episode before a close (the finding's started_at)
    open_since: np.ndarray  # after the update (started_at of open / raise findings)


def update(ep: np.ndarray, rules: Rules, t: np.ndarray, score: np.ndarray) -> Moves:
    """Apply ``Episode.update`` to every cell of ``ep`` (shape (6, d, m)), writing changes into it.

    ``t`` has shape (m,), ``score`` (d, m). Most readings find every episode closed, nothing
    pending and every score below ``on``: the update is a no-op there, so only the other
    readings (``Moves.at``) are computed, with the scalar code's comparisons, branch by branch.
    """
    stirred = ((score >= rules.on) | ~np.isnan(ep[OPEN_SINCE]) | ~np.isnan(ep[PENDING_SINCE])
               | (ep[PENDING_N] != 0)).any(axis=0)
    at = np.flatnonzero(stirred)
    sub = ep[:, :, at]
    moves = _update(sub, rules, t[at], score[:, at])
    ep[:, :, at] = sub
    return Moves(at, *moves)


def _update(ep: np.ndarray, rules: Rules, t: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """The state machine on every cell of ``ep`` (in place); (opened, raised, closed, started, open_since)."""
    ps, pn, os_, rep, calm, peak = ep
    os_ = os_.copy()  # ``ep`` is overwritten below; a close reports the episode's old start
    tt = t[None, :]
    closed = np.isnan(os_)
    high = score >= rules.on
    # closed: below ``on`` forgets the pending run; at or above it counts towards opening
    low_c = closed & ~high
    up_c = closed & high
    ps1 = np.where(up_c & np.isnan(ps), tt, ps)
    pn1 = np.where(up_c, pn + 1, pn)
    opened = up_c & ~((pn1 < rules.min_count) | (tt - ps1 < rules.min_duration_s))
    ps1 = np.where(low_c, np.nan, ps1)
    pn1 = np.where(low_c, 0.0, pn1)
    os1 = np.where(opened, ps1, os_)
    rep1 = np.where(opened, score, rep)
    calm1 = np.where(opened, np.nan, calm)
    peak1 = np.where(opened, score, peak)
    # open: at or above ``off`` keeps it open (and may re-report); below for ``quiet_s`` closes it
    opn = ~closed
    busy = opn & (score >= rules.off)
    calm1 = np.where(busy, np.nan, calm1)
    peak1 = np.where(busy, pmax(peak, score), peak1)
    raised = busy & (np.abs(score - rep) >= rules.step) & (score > rep)
    rep1 = np.where(raised, score, rep1)
    calm_o = opn & ~busy
    calm1 = np.where(calm_o & np.isnan(calm), tt, calm1)
    closing = calm_o & ~(tt - calm1 < rules.quiet_s)
    os1 = np.where(closing, np.nan, os1)
    ps1 = np.where(closing, np.nan, ps1)
    pn1 = np.where(closing, 0.0, pn1)
    calm1 = np.where(closing, np.nan, calm1)
    ep[PENDING_SINCE], ep[PENDING_N], ep[OPEN_SINCE] = ps1, pn1, os1
    ep[REPORTED], ep[CALM_SINCE], ep[PEAK] = rep1, calm1, peak1
    return opened, raised, closing, os_, os1
