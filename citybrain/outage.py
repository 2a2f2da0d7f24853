"""When silent devices are a power outage, not device trouble: one rule for every stage.

Fusion applies it to the findings of one partition; the incident service applies it again to
an incident's evidence, since the grids of one area are spread over partitions (the demo city's
power-outage scenario silenced 12 devices in three grids on different partitions: every
partition saw fewer than three, and the incident stayed ``device_offline``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: silent devices in one place at once: from this many it is a power outage
OUTAGE_SOURCES = 3
#: slack (s) on each silence's span when asking whether silences began at once (presence messages
#: come when the broker notices the lost connection, a keep-alive or two after the outage)
OUTAGE_SLACK_S = 300.0
#: the events of silent devices: one situation, relabelled by the count
OFFLINE_EVENTS = ("device_offline", "power_outage")


def most_at_once(starts: Iterable[float], ends: Iterable[float], slack: float = 0.0) -> int:
    """The most intervals ``[starts[i], ends[i] + slack]`` that share one instant.

    Why: "many devices going silent at once" is a count over a window that each source defines
    itself: a silence began somewhere between the last reading and the deadline its cadence set.
    Devices cut off by one outage all have the outage's instant in that span; a device dead for two
    days does not, whatever is still open about it. The largest such group starts at one of the
    starts, so the count at each start is enough (O(n^2) on the few sources of one situation).
    """
    s, e = np.asarray(list(starts), float), np.asarray(list(ends), float) + slack
    if s.size == 0:
        return 0
    return int(((s[None, :] <= s[:, None]) & (e[None, :] >= s[:, None])).sum(axis=1).max())


def silent_at_once(spans: Iterable[tuple[str, float, float]]) -> int:
    """How many sources went silent at once, from (source, last reading, noticed at) spans; a
    source's several spans (a silence and a last will) count as one, from the first to the last."""
    by: dict[str, tuple[float, float]] = {}
    for source, a, b in spans:
        lo, hi = by.get(source, (a, b))
        by[source] = (min(lo, a), max(hi, b))
    return most_at_once([a for a, _ in by.values()], [b for _, b in by.values()], OUTAGE_SLACK_S)


def is_outage(spans: Iterable[tuple[str, float, float]], extra_sources: int = 0) -> bool:
    return silent_at_once(spans) + extra_sources >= OUTAGE_SOURCES
