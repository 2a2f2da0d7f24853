"""Anomaly likelihood: how unusual is the recent level of a raw anomaly score, for this source?

Numenta's post-processing of raw prediction-error scores (Ahmad et al., "Unsupervised real-time
anomaly detection for streaming data", Neurocomputing 2017; used by their NAB detector): the
raw score is averaged over a short window, the averages of the last ``long`` readings are
modelled as a Gaussian, and the likelihood is one minus the Gaussian tail probability of the
current average. A source whose raw scores are always noisy earns nothing for being noisy;
a jump in the raw score after a calm stretch earns a likelihood close to 1. ``log_score``
spreads the interesting end (0.999 ... 0.9999999999) over [0, 1] as NAB's detector does.

O(1) time per reading (running sums over ring buffers), O(``long`` + ``ranks``) floats of memory.

The Gaussian is wrong for heavy-tailed raw scores (a lognormal series' averages are skewed: the
Gaussian's tail is far thinner than theirs, so every spike looks like 1e-5). With ``ranks`` > 0
the averages the caller remembers (:meth:`remember`) are also kept, up to ``ranks`` of them, and
:meth:`capped` bounds a log score by their empirical tail: an average that ``c`` of the last
``ranks`` averages reached has a tail probability of at least ``c / ranks`` whatever the
Gaussian says. The count is taken only when the caller asks (a candidate report), so the
per-reading cost is one append.
"""

from __future__ import annotations

import math
from collections import deque

#: lower bounds of the fitted Gaussian (Numenta's): a series of near-zero raw scores must not
#: turn the slightest blip into a certainty
MIN_MEAN, MIN_VAR = 0.03, 0.0003
_LOG_SCALE = math.log(1e-10)


def log_score(likelihood: float) -> float:
    """Likelihood on a log scale in [0, 1]: 0.5 at 0.99999, 1.0 at 1 - 1e-10."""
    return min(1.0, max(0.0, math.log(1.0000000001 - likelihood) / _LOG_SCALE))


class AnomalyLikelihood:
    """Score-then-learn likelihood of a stream of raw scores in [0, 1] (one-sided: high is bad)."""

    __slots__ = ("short", "long", "learn_n", "recent", "recent_sum", "history", "h_sum", "h_sq", "n", "ranked")

    def __init__(self, short: int = 10, long: int = 500, learn_n: int = 300, ranks: int = 0) -> None:
        self.short, self.long, self.learn_n = short, long, learn_n
        #: the last ``ranks`` remembered averages (None: the Gaussian alone)
        self.ranked: deque[float] | None = deque(maxlen=ranks) if ranks > 0 else None
        self.recent: deque[float] = deque(maxlen=short)
        self.recent_sum = 0.0
        self.history: deque[float] = deque(maxlen=long)
        self.h_sum = self.h_sq = 0.0
        self.n = 0

    def _average(self, raw: float) -> float:
        """The short moving average including ``raw`` (without storing it)."""
        drop = self.recent[0] if len(self.recent) == self.short else 0.0
        return (self.recent_sum - drop + raw) / min(len(self.recent) + 1, self.short)

    def score_one(self, raw: float) -> float:
        """Likelihood in [0, 1) that the recent raw scores are unusual (0 during warm-up)."""
        return self._likelihood(self._average(raw))

    def _likelihood(self, avg: float) -> float:
        k = len(self.history)
        if self.n < self.learn_n or k < 2:
            return 0.0
        mean = self.h_sum / k
        var = max(self.h_sq / k - mean * mean, MIN_VAR)
        mean = max(mean, MIN_MEAN)
        if avg <= mean:
            return 0.0
        return 1.0 - 0.5 * math.erfc((avg - mean) / math.sqrt(2.0 * var))

    def learn_one(self, raw: float) -> None:
        self.score_learn_one(raw)

    def remember(self) -> None:
        """Keep the latest average for :meth:`capped`, once the likelihood is live (the warm-up's
        averages come from baselines still converging). The caller decides which to keep: NAB
        mode skips a report's aftermath, so one anomaly does not hide the next."""
        if self.ranked is not None and self.n > self.learn_n:
            self.ranked.append(self.history[-1])

    def capped(self, score: float) -> float:
        """``score`` (the log score of the latest average) bounded by the remembered averages'
        empirical tail: at most ``log_score`` of a tail probability c / len, c of them being at
        least as high. Unchanged when none is (a new extreme: only the Gaussian can say how far)."""
        ranked = self.ranked
        if not ranked or score <= 0.0:
            return score
        avg = self.history[-1]
        c = len([v for v in ranked if v >= avg])  # a list: ~2x faster than summing a generator
        return min(score, math.log(c / len(ranked)) / _LOG_SCALE) if c else score

    def score_learn_one(self, raw: float) -> float:
        """``score_one`` then ``learn_one`` with one moving average (NAB mode's hot path: locals,
        no helper calls but the likelihood's)."""
        recent, history = self.recent, self.history
        full = len(recent) == self.short
        drop = recent[0] if full else 0.0
        avg = (self.recent_sum - drop + raw) / (self.short if full else len(recent) + 1)
        likelihood = self._likelihood(avg)
        recent.append(raw)
        self.recent_sum = self.recent_sum - drop + raw
        h_sum, h_sq = self.h_sum, self.h_sq
        if len(history) == self.long:
            old = history[0]
            h_sum -= old
            h_sq -= old * old
        history.append(avg)
        h_sum += avg
        h_sq += avg * avg
        self.n += 1
        if self.n % self.long == 0:  # re-add from scratch now and then: no float drift in the sums
            h_sum = math.fsum(history)
            h_sq = math.fsum(v * v for v in history)
            self.recent_sum = math.fsum(recent)
        self.h_sum, self.h_sq = h_sum, h_sq
        return likelihood
