"""A row's intervals and its per-sample worst case, from its cells' per-sample outcomes.

The worst case over attacks is AutoAttack's: a sample counts as robust only if it is robust to
**every** attack at the headline budget (for segmentation, each volume's lowest Dice over the
attacks; for a binary AUC, each sample's least favourable score over the attacks). Cells logged
before medbench kept per-sample outcomes fall back to the lowest per-attack value (an upper
bound of the per-sample worst case), and say so (``WorstCase.per_sample`` false).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from medbench.leaderboard.records import CellRecord
from medbench.measuring.intervals import (
    Interval,
    auc,
    bootstrap_auc,
    bootstrap_mean,
    wilson,
    wilson_of_rate,
)

Samples = Mapping[str, np.ndarray]
SampleSource = Mapping[str, Samples | None]
"""Per cell run id, its per-sample outcomes (None where the cell logged none)."""


@dataclass
class RowStatistics:
    """What :func:`row_statistics` returns."""

    intervals: dict[str, Interval] = field(default_factory=dict)
    """By ``clean_<metric>``, by attack (its robust metric at the headline), and ``worst_case``."""
    worst_case: float | None = None
    """The per-sample worst case at the headline; None when some cell has no per-sample outcomes."""
    worst_samples: WorstSamples | None = None
    """The per-sample worst case itself, for paired tests between rows."""


def _binary_margin(logits: np.ndarray) -> np.ndarray | None:
    """The score a binary AUC ranks by (logit margin), None for more than two classes."""
    if logits.ndim != 2 or logits.shape[1] > 2:
        return None
    return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


def _volume_means(per_class: np.ndarray) -> np.ndarray:
    """Each volume's NaN-mean over its classes (NaN where no class is defined)."""
    defined = ~np.isnan(per_class)
    counts = defined.sum(axis=1)
    sums = np.where(defined, per_class, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _interval(samples: Samples, side: str, metric: str) -> Interval | None:
    """The interval of the clean (``side="clean"``) or adversarial metric of one cell."""
    if metric == "accuracy":
        outcome = samples["clean_correct"] if side == "clean" else samples["robust"]
        return wilson(int(outcome.sum()), len(outcome))
    if metric == "dice":
        return bootstrap_mean(_volume_means(samples[f"{side}_dice"]))
    if metric == "auc" and "label" in samples and samples["label"].ndim == 1:
        margin = _binary_margin(samples[f"{side}_logits"])
        return None if margin is None else bootstrap_auc(margin, samples["label"])
    return None


def _fallback(cell: CellRecord, side: str, metric: str) -> Interval | None:
    """Without per-sample outcomes: Wilson from the logged accuracy and the sample count."""
    if metric != "accuracy":
        return None
    name = "clean_accuracy" if side == "clean" else "robust_accuracy"
    return wilson_of_rate(cell.metric(name), cell.n_eval)


@dataclass(frozen=True)
class WorstSamples:
    """A row's per-sample worst case: what its worst-case value, interval and paired tests use.

    Attributes:
        metric: ``accuracy`` (``outcome``: robust to every attack, bool), ``dice`` (each
            volume's lowest mean Dice) or ``auc`` (each sample's least favourable margin, with
            ``labels``).
        index: The samples' positions in the test split (paired comparisons need equal ones).
    """

    metric: str
    outcome: np.ndarray
    index: np.ndarray
    labels: np.ndarray | None = None


def _worst(found: list[Samples], metric: str) -> WorstSamples | None:
    """The per-sample worst case over the cells' outcomes; None where it is not defined."""
    if not found or any(not np.array_equal(s["index"], found[0]["index"]) for s in found):
        return None
    index = found[0]["index"]
    if metric == "accuracy":
        return WorstSamples(metric, np.logical_and.reduce([s["robust"] for s in found]), index)
    if metric == "dice":
        return WorstSamples(metric, np.fmin.reduce([_volume_means(s["adv_dice"]) for s in found]), index)
    labels = found[0].get("label")
    margins = [_binary_margin(s["adv_logits"]) for s in found]
    if metric != "auc" or labels is None or labels.ndim != 1 or any(m is None for m in margins):
        return None
    stacked = np.stack([m for m in margins if m is not None])
    worst_margin = np.where(labels.astype(bool), stacked.min(axis=0), stacked.max(axis=0))
    return WorstSamples(metric, worst_margin, index, labels)


def worst_value(worst: WorstSamples) -> tuple[float, Interval | None]:
    """The value of a per-sample worst case and its 95% interval."""
    if worst.metric == "accuracy":
        robust = worst.outcome
        return float(robust.mean()), wilson(int(robust.sum()), len(robust))
    if worst.metric == "dice":
        defined = worst.outcome[~np.isnan(worst.outcome)]
        return (float(defined.mean()) if len(defined) else float("nan")), bootstrap_mean(worst.outcome)
    assert worst.labels is not None
    return auc(worst.outcome, worst.labels), bootstrap_auc(worst.outcome, worst.labels)


def row_statistics(
    row: Sequence[CellRecord],
    at_headline: Mapping[str, CellRecord],
    metric: str,
    samples: SampleSource,
) -> RowStatistics:
    """Intervals of a row's clean metric, of each attack at its headline, and its worst case.

    Args:
        row: The row's cells.
        at_headline: Per attack, the row's cell at the suite's headline budget.
        metric: The primary metric (``accuracy``, ``auc`` or ``dice``).
        samples: The per-sample outcomes of the cells, by run id.
    """
    result = RowStatistics()
    first = row[0]
    first_samples = samples.get(first.run_id)
    clean = _interval(first_samples, "clean", metric) if first_samples else _fallback(first, "clean", metric)
    if clean is not None:
        result.intervals[f"clean_{metric}"] = clean
    for attack, cell in at_headline.items():
        found = samples.get(cell.run_id)
        interval = _interval(found, "adv", metric) if found else _fallback(cell, "adv", metric)
        if interval is not None:
            result.intervals[attack] = interval
    bounded = [c for c in at_headline.values() if c.threat_model != "l2-minimal"]
    found_all = [samples.get(c.run_id) for c in bounded]
    if bounded and all(s is not None for s in found_all):
        worst = _worst([s for s in found_all if s is not None], metric)
        if worst is not None:
            result.worst_samples = worst
            result.worst_case, interval = worst_value(worst)
            if interval is not None:
                result.intervals["worst_case"] = interval
    return result
