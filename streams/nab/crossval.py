"""Honest NAB figures on the development subset: choices made on some files, scored on others.

NAB optimises one threshold per profile over the whole corpus, so the in-sample score of a
subset flatters whatever was chosen on it. Here the choice (the threshold, and in
:func:`nested` also the detector's knob setting) is made on every file but a held-out group,
the held-out group is scored with it, and the held-out raw scores of all groups are added up and
normalised as one corpus. Groups are files (leave-one-file-out) or categories
(leave-one-category-out: the closest stand-in for a corpus whose kinds of series we have not
seen).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.nab.detector import NabKnobs
from streams.nab.runner import data_files, read_series, score_series
from streams.nab.scoring import (
    PROFILES,
    Profile,
    Series,
    best_threshold,
    file_score,
    load,
    normalise,
    read_labels,
    scored,
)


@dataclass(frozen=True, slots=True)
class LabelledFile:
    """One NAB file in memory with its labelled windows: what a knob sweep runs over."""

    key: str
    stamps: list[str]
    ts: list[float]
    vs: list[float]
    windows: list[list[str]]


def read_labelled(data: Path) -> list[LabelledFile]:
    labels = read_labels(data.parent / "combined_windows.json")
    out = []
    for f in data_files(data):
        key = f"{f.parent.name}/{f.name}"
        if key in labels:
            out.append(LabelledFile(key, *read_series(f), labels[key]))
    return out


def score_labelled(files: list[LabelledFile], knobs: NabKnobs) -> list[Series]:
    """Run the detector with ``knobs`` over every file in memory (no results files)."""
    return [scored(f.key, f.stamps, score_series(f.ts, f.vs, knobs), f.windows) for f in files]


def category(s: Series) -> str:
    return s.name.split("/")[0]


def by_file(s: Series) -> str:
    return s.name


@dataclass(frozen=True, slots=True)
class HeldOut:
    """A held-out estimate: the normalised total, each group's own normalised score (None for a
    group without windows: its raw false-positive cost instead) and what each fold chose."""

    score: float
    groups: dict[str, float]
    raw: dict[str, float]
    picks: dict[str, str]


def nested(settings: Mapping[str, list[Series]], group: Callable[[Series], str],
           p: Profile = PROFILES[0]) -> HeldOut:
    """Per fold, choose the setting and its threshold on the other groups; score the held-out one.

    ``settings`` maps a setting's name to its scored files (the same files in the same order for
    every setting). With a single setting this is plain held-out threshold choice.
    """
    files = next(iter(settings.values()))
    names = [group(s) for s in files]
    raw: dict[str, float] = {}
    norm: dict[str, float] = {}
    picks: dict[str, str] = {}
    for g in sorted(set(names)):
        best: tuple[float, str, float] | None = None
        for name, series in settings.items():
            train = [s for s, h in zip(series, names) if h != g]
            thr = best_threshold(train, p)
            total = sum(file_score(s, thr, p) for s in train)
            if best is None or total > best[0]:
                best = (total, name, thr)
        assert best is not None
        _, name, thr = best
        test = [s for s, h in zip(settings[name], names) if h == g]
        raw[g] = sum(file_score(s, thr, p) for s in test)
        n_windows = sum(len(s.windows) for s in test)
        if n_windows:
            norm[g] = normalise(raw[g], n_windows, p)
        picks[g] = name
    total_windows = sum(len(s.windows) for s in files)
    return HeldOut(normalise(sum(raw.values()), total_windows, p), norm, raw, picks)


def report(results: Path, data: Path) -> dict[str, dict[str, HeldOut]]:
    """Held-out threshold choice for a results dir: {profile: {"file": ..., "category": ...}}."""
    series = load(results, data)
    return {p.name: {"file": nested({"": series}, by_file, p), "category": nested({"": series}, category, p)}
            for p in PROFILES}
