"""95% intervals of a board's numbers (README, "Intervals"; ``shared/notes/statistics.md``).

* Accuracies and other proportions of n samples: the **Wilson score interval**
  (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``), which keeps its coverage
  at small n and near 0 or 1.
* Means over samples (Dice, HD95): the **percentile bootstrap** over samples
  (``scipy.stats.bootstrap``, 1,000 resamples, seed 0, so that a board is reproducible).
* AUC: a percentile bootstrap that resamples **within each class** (every resample keeps
  both classes, so the AUC stays defined); written here because ``scipy.stats.bootstrap`` has
  no stratified resampling. The AUC itself is the Mann-Whitney statistic with tied scores
  counted half, as scikit-learn's ``roc_auc_score``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A two-sided interval at :data:`CONFIDENCE` and how it was computed."""

    low: float
    high: float
    method: str

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def wilson(successes: int, n: int) -> Interval | None:
    """The Wilson score interval of ``successes`` out of ``n``; None for ``n == 0``."""
    if n <= 0:
        return None
    successes = min(max(int(successes), 0), n)
    result = stats.binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Interval(float(result.low), float(result.high), "wilson")


def wilson_of_rate(rate: float, n: int) -> Interval | None:
    """:func:`wilson` of a logged proportion of ``n`` samples (its count is ``round(rate * n)``)."""
    if n <= 0 or math.isnan(rate):
        return None
    return wilson(round(rate * n), n)


def bootstrap_mean(values: np.ndarray, seed: int = SEED) -> Interval | None:
    """The percentile-bootstrap interval of the mean of the defined (non-NaN) values."""
    defined = np.asarray(values, dtype=np.float64)
    defined = defined[~np.isnan(defined)]
    if len(defined) < 2:
        return None
    if np.all(defined == defined[0]):
        return Interval(float(defined[0]), float(defined[0]), "bootstrap")
    result = stats.bootstrap(
        (defined,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return Interval(
        float(result.confidence_interval.low), float(result.confidence_interval.high), "bootstrap"
    )


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of binary ``labels`` (0/1) ranked by ``scores`` (ties count half); NaN with one class."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def bootstrap_auc(scores: np.ndarray, labels: np.ndarray, seed: int = SEED) -> Interval | None:
    """The stratified percentile-bootstrap interval of the AUC (both classes in every resample)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positive, negative = np.flatnonzero(labels), np.flatnonzero(~labels)
    if len(positive) < 2 or len(negative) < 2:
        return None
    rng = np.random.default_rng(seed)
    values = np.empty(RESAMPLES)
    for i in range(RESAMPLES):
        chosen = np.concatenate(
            [
                rng.choice(positive, len(positive), replace=True),
                rng.choice(negative, len(negative), replace=True),
            ]
        )
        values[i] = auc(scores[chosen], labels[chosen])
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high), "stratified bootstrap")
