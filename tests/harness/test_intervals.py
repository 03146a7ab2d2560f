"""The board's 95% intervals against independent references: the Wilson formula written out,
scikit-learn's AUC, and coverage on simulated data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medbench.measuring.intervals import auc, bootstrap_auc, bootstrap_mean, wilson, wilson_of_rate


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 64), (1, 64), (32, 64), (63, 64), (64, 64), (212, 450), (3, 7)])
def test_wilson_is_the_wilson_score_interval(k: int, n: int) -> None:
    interval = wilson(k, n)
    assert interval is not None and interval.method == "wilson"
    assert (interval.low, interval.high) == pytest.approx(_wilson(k, n), abs=1e-12)
    assert wilson(0, 0) is None and wilson_of_rate(float("nan"), 10) is None
    assert wilson_of_rate(k / n, n) == interval


def test_auc_counts_ties_half_as_scikit_learn_does() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # many ties
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert math.isnan(auc(scores, np.ones(200)))


def test_bootstrap_intervals_hold_their_point_and_cover_the_truth_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(40):
        values = rng.normal(0.7, 0.1, 60)
        interval = bootstrap_mean(values, seed=trial)
        assert interval is not None and interval.low <= values.mean() <= interval.high
        covered += interval.low <= 0.7 <= interval.high
    assert covered >= 33, covered  # 95% nominal: at least 33 of 40 (P(fewer) < 1% at 0.95)
    labels = np.repeat([0, 1], 50)
    scores = rng.normal(labels, 1.0)
    interval = bootstrap_auc(scores, labels)
    assert interval is not None and interval.low < auc(scores, labels) < interval.high
    assert bootstrap_auc(scores[:51], labels[:51]) is None, "one positive: no stratified bootstrap"
    assert bootstrap_mean(np.array([np.nan, 0.5])) is None
