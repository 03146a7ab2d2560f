"""Paired tests between rows, Holm's correction and tied ranks, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medbench.leaderboard.row_statistics import WorstSamples
from medbench.leaderboard.significance import Comparison, compare_all, holm, paired_p_value, rank_groups


def test_holm_matches_the_step_down_procedure_by_hand() -> None:
    # sorted: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1), made monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


def _mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar: twice the binomial tail of the smaller discordant count."""
    n, k = b + c, min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _accuracy_row(robust: list[bool]) -> WorstSamples:
    return WorstSamples("accuracy", np.array(robust), np.arange(len(robust)))


@pytest.mark.parametrize(
    ("only_a", "only_b", "both", "neither"), [(12, 3, 40, 45), (5, 5, 10, 80), (7, 0, 0, 3)]
)
def test_accuracy_rows_are_compared_with_the_exact_mcnemar_test(
    only_a: int, only_b: int, both: int, neither: int
) -> None:
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    p = paired_p_value(_accuracy_row(a), _accuracy_row(b))
    assert p == pytest.approx(_mcnemar_exact(only_a, only_b))


def test_rows_on_other_samples_are_not_paired() -> None:
    a = WorstSamples("accuracy", np.ones(4, bool), np.arange(4))
    b = WorstSamples("accuracy", np.ones(4, bool), np.arange(1, 5))
    assert paired_p_value(a, b) is None


def test_a_dice_difference_is_tested_by_a_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, 40)
    same = WorstSamples("dice", base + rng.normal(0, 0.001, 40), np.arange(40))
    lower = WorstSamples("dice", base - 0.05, np.arange(40))
    reference = WorstSamples("dice", base, np.arange(40))
    assert paired_p_value(reference, lower) == pytest.approx(0.0)
    assert paired_p_value(reference, same) > 0.05


def test_ranks_are_shared_until_a_row_is_significantly_below_its_groups_best() -> None:
    comparisons = {
        (0, 1): Comparison(0, 1, 0.2, 0.4),
        (0, 2): Comparison(0, 2, 0.03, 0.09),
        (0, 3): Comparison(0, 3, 0.001, 0.004),
        (3, 4): Comparison(3, 4, 0.3, 0.6),
    }
    assert rank_groups(comparisons, 5) == ["1–3", "1–3", "1–3", "4–5", "4–5"]
    assert rank_groups(comparisons, 5, barriers=[False, False, False, False, True]) == [
        "1–3",
        "1–3",
        "1–3",
        "4",
        "5",
    ]
    assert rank_groups({}, 2) == ["1", "2"], "rows that cannot be compared are not tied"


def test_compare_all_corrects_every_pair_together() -> None:
    rows = [_accuracy_row([True] * 30 + [False] * 10), _accuracy_row([True] * 28 + [False] * 12), None]
    comparisons = compare_all(rows)
    assert set(comparisons) == {(0, 1)}
    assert comparisons[(0, 1)].adjusted == comparisons[(0, 1)].p_value == pytest.approx(_mcnemar_exact(2, 0))
