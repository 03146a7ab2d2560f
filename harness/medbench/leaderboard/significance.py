"""Which differences on a board are real: paired tests between rows, Holm-corrected, and tied ranks.

Every row of a board is evaluated on the same test samples, so rows are compared **paired**, on
their per-sample worst case (:class:`~medbench.leaderboard.row_statistics.WorstSamples`):

* accuracy: the exact McNemar test on the discordant samples (robust in one row, not in the
  other), ``scipy.stats.binomtest(min(b, c), b + c, 0.5)``;
* Dice: a paired bootstrap of the mean difference over the volumes both rows define;
* AUC: a paired bootstrap of the AUC difference that resamples within each class.

The family is every pair of rows of the board; its p-values are corrected with Holm's
step-down method (family-wise error at 5%). Ranks: rows are sorted by the point estimate, and a
new rank group starts only when a row is significantly below the best row of the current
group; the rows of a group share its rank, written ``2–4``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from medbench.leaderboard.row_statistics import WorstSamples
from medbench.measuring.intervals import RESAMPLES, SEED, auc

ALPHA = 0.05


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (each at most 1, monotone in the raw order)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - position) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided p-value of a bootstrap distribution of a difference against 0."""
    below, above = float(np.mean(differences <= 0)), float(np.mean(differences >= 0))
    return min(1.0, 2 * min(below, above))


def paired_p_value(a: WorstSamples, b: WorstSamples, seed: int = SEED) -> float | None:
    """The p-value that rows ``a`` and ``b`` differ; None when they cannot be paired."""
    if a.metric != b.metric or not np.array_equal(a.index, b.index):
        return None
    rng = np.random.default_rng(seed)
    if a.metric == "accuracy":
        only_a = int(np.sum(a.outcome & ~b.outcome))
        only_b = int(np.sum(~a.outcome & b.outcome))
        if only_a + only_b == 0:
            return 1.0
        return float(stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)
    if a.metric == "dice":
        both = ~np.isnan(a.outcome) & ~np.isnan(b.outcome)
        differences = (a.outcome - b.outcome)[both]
        if len(differences) < 2:
            return None
        resampled = rng.integers(0, len(differences), (RESAMPLES, len(differences)))
        return _bootstrap_p(differences[resampled].mean(axis=1))
    labels = a.labels
    if labels is None:
        return None
    positive, negative = np.flatnonzero(labels.astype(bool)), np.flatnonzero(~labels.astype(bool))
    if len(positive) < 2 or len(negative) < 2:
        return None
    differences = np.empty(RESAMPLES)
    for i in range(RESAMPLES):
        chosen = np.concatenate([rng.choice(positive, len(positive)), rng.choice(negative, len(negative))])
        differences[i] = auc(a.outcome[chosen], labels[chosen]) - auc(b.outcome[chosen], labels[chosen])
    return _bootstrap_p(differences)


@dataclass(frozen=True)
class Comparison:
    """Two rows' paired test, with its Holm-adjusted p-value."""

    better: int
    worse: int
    p_value: float
    adjusted: float

    @property
    def significant(self) -> bool:
        return self.adjusted < ALPHA


def compare_all(rows: Sequence[WorstSamples | None]) -> dict[tuple[int, int], Comparison]:
    """Every pair ``(i, j)``, ``i < j``, of rows that can be paired, Holm-corrected together."""
    raw: dict[tuple[int, int], float] = {}
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            a, b = rows[i], rows[j]
            if a is not None and b is not None and (p := paired_p_value(a, b)) is not None:
                raw[(i, j)] = p
    adjusted = holm(list(raw.values()))
    return {
        pair: Comparison(pair[0], pair[1], p, q) for (pair, p), q in zip(raw.items(), adjusted, strict=True)
    }


def rank_groups(
    comparisons: dict[tuple[int, int], Comparison], count: int, barriers: Sequence[bool] = ()
) -> list[str]:
    """The rank of each of ``count`` rows in board order (``1``, ``2–4``...).

    A row starts a new group when it is significantly below the best (first) row of the current
    group, when it cannot be compared with it, or at a barrier (the first row at chance).
    """
    groups: list[list[int]] = []
    for row in range(count):
        leader = groups[-1][0] if groups else None
        comparison = comparisons.get((leader, row)) if leader is not None else None
        barrier = bool(barriers[row]) if row < len(barriers) else False
        if leader is None or barrier or comparison is None or comparison.significant:
            groups.append([row])
        else:
            groups[-1].append(row)
    ranks = [""] * count
    for group in groups:
        first, last = group[0] + 1, group[-1] + 1
        for row in group:
            ranks[row] = str(first) if first == last else f"{first}–{last}"
    return ranks
