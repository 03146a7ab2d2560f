"""Leaderboard entries: one per (model, defense) row of a suite, built from its MLflow cells.

The entry is a pydantic model, and ``leaderboards/schema/entry.schema.json`` is generated
from it (:func:`entry_schema`; a test checks that the checked-in copy is current). Metric
values are JSON numbers, ``null`` where undefined (NaN).

Definitions:

* **primary metric**: ``accuracy`` (classification), ``auc`` (multi-label) or ``dice``
  (segmentation); every board ranks by its robust value, higher is better.
* **headline budget**: per attack, the largest budget any row was attacked with; a row without
  a cell at that budget has no value for the attack (and the attack does not count for its
  worst case).
* **worst case**: the lowest robust primary metric over the row's attacks at their headline
  budgets (attacks with a budget ball only: ``l2-minimal`` attacks, which always succeed,
  are left out), and the attack that reached it.
* **curve area**: per attack, the normalised area under robust metric vs. budget from 0
  (the clean value) to the largest budget (trapezoids): the mean robust metric over the
  budget range, in the metric's units. ``curve_area`` is the lowest over attacks.
* **runtime**: the seconds the row's cells spent attacking and predicting (training is not
  included: it is cached and shared by suites).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, Field

from medbench.config.spec import RANKING_METRICS
from medbench.errors import UsageError, unknown_name_message
from medbench.leaderboard.curves import panel_name
from medbench.leaderboard.records import CellRecord, MatrixRecord
from medbench.leaderboard.row_statistics import SampleSource, WorstSamples, row_statistics
from medbench.leaderboard.significance import compare_all, rank_groups
from medbench.measuring.metrics import mean_defined
from medbench.measuring.sanity import Flag, check_row, is_at_chance, needs_adaptive_evaluation, primary_metric

Number = float | None


def _number(value: float) -> Number:
    return None if value is None or math.isnan(value) or math.isinf(value) else float(value)


class AttackResult(BaseModel):
    """One cell of the row: an attack at one budget."""

    attack: str
    threat_model: str = Field(description="linf, l2, l2-minimal, noise or frequency")
    threat: Literal["direct", "transfer"]
    surrogate: str | None = Field(None, description="MODEL:DEFENSE the transfer examples were crafted on")
    budget_name: str
    budget: float = Field(description="on the [0, 1] intensity scale for eps and sigma")
    budget_native: str | None = Field(None, description="the budget as given in the data's unit, e.g. 5HU")
    robust: Number = Field(description="the robust primary metric")
    metrics: dict[str, Number]
    seconds: Number
    run_id: str


class WorstCase(BaseModel):
    """The worst case over the row's attacks at their headline budgets."""

    value: Number = Field(
        description="per sample (robust only if robust to every attack) when per_sample, else the "
        "lowest per-attack value (an upper bound of the per-sample worst case)"
    )
    attack: str | None = Field(description="the attack with the lowest per-attack value")
    budget: float | None
    per_sample: bool = Field(False, description="computed per sample from the cells' per_sample.npz")


class SanityFlag(BaseModel):
    """A failed sanity check (see :mod:`medbench.measuring.sanity`)."""

    check: str
    message: str
    cells: list[str]


class BaselineComparison(BaseModel):
    """A row against its model's baseline row (defense ``none``), on their per-sample worst case."""

    baseline: str = Field(description="model/none")
    difference: Number = Field(description="this row's worst case minus the baseline's")
    p_value: Number = Field(description="the paired test's p-value, Holm-adjusted over every pair of rows")
    significant: bool = Field(description="adjusted p-value below 0.05")


class RunIds(BaseModel):
    """The MLflow runs behind the entry."""

    parents: list[str]
    cells: list[str]


class LeaderboardEntry(BaseModel):
    """One row of a suite's leaderboard: a model with a defense, under every attack and budget."""

    schema_version: Literal[1] = 1
    rank: int = Field(description="1 = best worst-case robust metric")
    suite: str
    experiment: str
    dataset: str
    dataset_fingerprint: str
    task: Literal["classification", "segmentation"]
    model: str
    defense: str
    metric: Literal["accuracy", "auc", "dice"] = Field(description="the primary metric; higher is better")
    threat_models: list[str]
    budgets: dict[str, list[float]] = Field(description="per attack, its budgets")
    headline_budgets: dict[str, float] = Field(description="per attack, the largest budget")
    clean: dict[str, Number] = Field(description="clean metrics (clean_accuracy, clean_auc, clean_dice, ...)")
    robust_at_headline: dict[str, Number] = Field(description="per attack, the robust metric at its headline")
    worst_case: WorstCase
    curve_areas: dict[str, Number]
    curve_area: Number = Field(description="the lowest of the curve areas")
    results: list[AttackResult]
    runtime_seconds: float
    accelerator: str = Field(description="cpu, or the GPU type")
    versions: dict[str, str]
    seed: int
    n_eval: int
    run_ids: RunIds
    sanity: list[SanityFlag]
    needs_adaptive_evaluation: bool = Field(description="a flag says the evaluation may be too weak")
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="what can change a number besides the settings: python, torch, torchvision, art, "
        "monai, numpy, mlflow, scipy, medbench versions, the source commit and the platform",
    )
    date: str | None = Field(None, description="UTC date of the newest cell of the row (YYYY-MM-DD)")
    rank_group: str = Field(
        "",
        description="the rank shared with rows not significantly different from this group's best "
        "(2–4): paired tests on the per-sample worst case (exact McNemar for accuracy, paired "
        "bootstrap for AUC and Dice), Holm-corrected over every pair of rows",
    )
    vs_baseline: BaselineComparison | None = None
    intervals: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="95% intervals, by clean_<metric>, by attack (its robust metric at the headline) "
        "and worst_case: Wilson for accuracies, a bootstrap over samples for AUC and Dice",
    )
    at_chance: bool = Field(
        default=False,
        description="the clean metric is at chance (flag clean-at-chance): the row ranks after all others",
    )


def entry_schema() -> dict[str, object]:
    """The JSON schema of one entry (``leaderboards/schema/entry.schema.json``)."""
    schema = LeaderboardEntry.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://medbench.dev/schema/leaderboard-entry-v1.json"
    return schema


def curve_area(points: Sequence[tuple[float, float]]) -> float:
    """Normalised trapezoid area of ``(budget, value)`` points (budget 0 first); NaN for < 2 points."""
    finite = sorted((b, v) for b, v in points if not math.isnan(v))
    if len(finite) < 2 or finite[-1][0] <= finite[0][0]:
        return math.nan
    area = sum((b1 - b0) * (v0 + v1) / 2 for (b0, v0), (b1, v1) in pairwise(finite))
    return area / (finite[-1][0] - finite[0][0])


def headline_budgets(cells: Sequence[CellRecord]) -> dict[str, float]:
    """Per attack (a transfer attack apart), the largest budget any row was attacked with."""
    headline: dict[str, float] = {}
    for cell in cells:
        key = panel_name(cell)
        headline[key] = max(headline.get(key, cell.budget), cell.budget)
    return headline


def _row_entry(
    row: Sequence[CellRecord],
    metric: str,
    suite: str,
    experiment: str,
    flags: list[Flag],
    accelerator: str,
    suite_headline: dict[str, float],
    samples: SampleSource,
) -> tuple[LeaderboardEntry, WorstSamples | None]:
    first = row[0]
    by_attack: dict[str, list[CellRecord]] = defaultdict(list)
    for cell in row:
        by_attack[panel_name(cell)].append(cell)
    clean_names = sorted({k for c in row for k in c.metrics if k.startswith("clean_")})
    clean = {name: _number(mean_defined(c.metric(name) for c in row)) for name in clean_names}
    headline, at_headline, areas = _attack_summaries(by_attack, first, metric, suite_headline)
    headline_cells = {
        attack: top
        for attack, cells in by_attack.items()
        if (top := max(cells, key=lambda c: c.budget)).budget == suite_headline[attack]
    }
    statistics = row_statistics(row, headline_cells, metric, samples)
    worst_case = _worst_case(by_attack, at_headline, headline)
    if statistics.worst_case is not None:
        worst_case = worst_case.model_copy(
            update={"value": _number(statistics.worst_case), "per_sample": True}
        )
    defined_areas = [v for v in areas.values() if v is not None]
    entry = LeaderboardEntry(
        rank=0,
        rank_group="",
        suite=suite,
        experiment=experiment,
        dataset=first.dataset,
        dataset_fingerprint=first.dataset_fingerprint,
        task="segmentation" if first.task == "segmentation" else "classification",
        model=first.model,
        defense=first.defense,
        metric=metric,  # type: ignore[arg-type]
        threat_models=sorted({c.threat_model for c in row}),
        budgets={a: sorted({c.budget for c in cells}) for a, cells in by_attack.items()},
        headline_budgets=headline,
        clean=clean,
        robust_at_headline=at_headline,
        worst_case=worst_case,
        intervals={name: (i.low, i.high) for name, i in statistics.intervals.items()},
        environment=max(row, key=lambda c: c.start_time).environment,
        date=_date(max(c.start_time for c in row)),
        curve_areas=areas,
        curve_area=min(defined_areas) if defined_areas else None,
        results=[_attack_result(c, metric) for c in sorted(row, key=lambda c: (panel_name(c), c.budget))],
        runtime_seconds=sum(v for c in row if not math.isnan(v := c.metric("seconds"))),
        accelerator=accelerator or first.accelerator,
        versions=first.versions,
        seed=first.seed,
        n_eval=min(c.n_eval for c in row),
        run_ids=RunIds(
            parents=sorted({c.parent_run_id for c in row if c.parent_run_id}),
            cells=[c.run_id for c in row],
        ),
        sanity=[SanityFlag(check=f.check, message=f.message, cells=list(f.cells)) for f in flags],
        needs_adaptive_evaluation=needs_adaptive_evaluation(flags),
        at_chance=is_at_chance(flags),
    )
    return entry, statistics.worst_samples


def _attack_summaries(
    by_attack: dict[str, list[CellRecord]],
    first: CellRecord,
    metric: str,
    suite_headline: dict[str, float],
) -> tuple[dict[str, float], dict[str, Number], dict[str, Number]]:
    """Per attack of a row: its headline budget, its robust metric there, and its curve area.

    Args:
        by_attack: The row's cells, grouped by attack (:func:`panel_name`).
        first: The row's first cell, whose clean metric starts every curve.
        metric: The primary metric.
        suite_headline: The suite's headline budget of every attack (:func:`headline_budgets`).

    Returns:
        ``(headline, at_headline, areas)``: a row not attacked at the suite's headline budget
        has None at the headline; ``l2-minimal`` attacks have no curve area.
    """
    headline: dict[str, float] = {}
    at_headline: dict[str, Number] = {}
    areas: dict[str, Number] = {}
    for attack, cells in by_attack.items():
        top = max(cells, key=lambda c: c.budget)
        headline[attack] = suite_headline[attack]
        # a row not attacked at the suite's headline budget has no value there (not a smaller one)
        at_top = top.budget == suite_headline[attack]
        at_headline[attack] = _number(top.metric(f"robust_{metric}")) if at_top else None
        if top.threat_model == "l2-minimal":
            continue
        points = [(0.0, first.metric(f"clean_{metric}"))]
        points += [(c.budget, c.metric(f"robust_{metric}")) for c in cells]
        areas[attack] = _number(curve_area(points))
    return headline, at_headline, areas


def _date(milliseconds: int) -> str | None:
    """``YYYY-MM-DD`` (UTC) of an MLflow start time; None when unknown."""
    if milliseconds <= 0:
        return None
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _worst_case(
    by_attack: dict[str, list[CellRecord]], at_headline: dict[str, Number], headline: dict[str, float]
) -> WorstCase:
    """The lowest robust metric at the headline over the row's attacks with a budget ball."""
    bounded = {
        a: v for a, v in at_headline.items() if v is not None and by_attack[a][0].threat_model != "l2-minimal"
    }
    worst_attack = min(bounded, key=lambda a: bounded[a]) if bounded else None
    return WorstCase(
        value=bounded[worst_attack] if worst_attack else None,
        attack=worst_attack,
        budget=headline[worst_attack] if worst_attack else None,
        per_sample=False,
    )


def _attack_result(cell: CellRecord, metric: str) -> AttackResult:
    """The entry's record of one cell: an attack at one budget."""
    return AttackResult(
        attack=cell.attack,
        threat_model=cell.threat_model,
        threat="transfer" if cell.threat == "transfer" else "direct",
        surrogate=cell.surrogate,
        budget_name=cell.budget_name,
        budget=cell.budget,
        budget_native=cell.budget_native,
        robust=_number(cell.metric(f"robust_{metric}")),
        metrics={k: _number(v) for k, v in sorted(cell.metrics.items())},
        seconds=_number(cell.metric("seconds")),
        run_id=cell.run_id,
    )


def build_entries(
    cells: Sequence[CellRecord],
    matrices: Sequence[MatrixRecord],
    suite: str,
    experiment: str,
    metric: str | None = None,
    samples: SampleSource | None = None,
) -> list[LeaderboardEntry]:
    """One ranked entry per row (model/defense) of ``cells`` (the newest finished cells).

    ``samples`` holds the cells' per-sample outcomes by run id (:mod:`medbench.measuring.per_sample`):
    with them, the worst case is per sample and every number gets its interval
    (:mod:`medbench.leaderboard.row_statistics`); without, accuracies still get Wilson intervals.

    Ranked by the worst-case robust ``metric`` (default: the task's primary metric) with ties
    broken by its clean value; rows without a worst case come last, and after them the rows
    whose clean metric is at chance (flag ``clean-at-chance``).

    Raises:
        UsageError: When ``metric`` is not one of :data:`RANKING_METRICS` or no cell logged it.
    """
    if not cells:
        return []
    if metric is None:
        metric = primary_metric(cells)
    elif metric not in RANKING_METRICS:
        raise UsageError(unknown_name_message("ranking metric", metric, RANKING_METRICS))
    elif all(math.isnan(c.metric(f"robust_{metric}")) for c in cells):
        raise UsageError(f"no cell of this board logged robust_{metric}: rank by another --metric")
    rows: dict[str, list[CellRecord]] = defaultdict(list)
    for cell in cells:
        rows[cell.row].append(cell)
    accelerators = {m.run_id: m.accelerator for m in matrices}
    entries = []
    worst: dict[str, WorstSamples | None] = {}
    for row in rows.values():
        accelerator = accelerators.get(row[0].parent_run_id, "")
        flags = check_row(row, metric)
        entry, worst[row[0].row] = _row_entry(
            row, metric, suite, experiment, flags, accelerator, headline_budgets(cells), samples or {}
        )
        entries.append(entry)

    def order(entry: LeaderboardEntry) -> tuple[bool, float, float]:
        worst = entry.worst_case.value
        clean = entry.clean.get(f"clean_{metric}")
        return (
            entry.at_chance,
            -(worst if worst is not None else -math.inf),
            -(clean if clean is not None else -math.inf),
        )

    entries.sort(key=order)
    for rank, entry in enumerate(entries, start=1):
        entry.rank = rank
    _significance(entries, [worst[f"{e.model}/{e.defense}"] for e in entries])
    return entries


def _significance(entries: list[LeaderboardEntry], worst: list[WorstSamples | None]) -> None:
    """Shared ranks and each row's comparison with its model's ``none`` row (in place)."""
    comparisons = compare_all(worst)
    barriers = [e.at_chance and (i == 0 or not entries[i - 1].at_chance) for i, e in enumerate(entries)]
    for entry, rank in zip(entries, rank_groups(comparisons, len(entries), barriers), strict=True):
        entry.rank_group = rank
    position = {(e.model, e.defense): i for i, e in enumerate(entries)}
    for i, entry in enumerate(entries):
        j = position.get((entry.model, "none"))
        if j is None or j == i:
            continue
        comparison = comparisons.get((min(i, j), max(i, j)))
        if comparison is None:
            continue
        mine, theirs = entry.worst_case.value, entries[j].worst_case.value
        entry.vs_baseline = BaselineComparison(
            baseline=f"{entry.model}/none",
            difference=None if mine is None or theirs is None else mine - theirs,
            p_value=comparison.adjusted,
            significant=comparison.significant,
        )
