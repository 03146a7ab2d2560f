"""Sanity checks of a finished matrix: signs that an evaluation (or a model) is weak.

Each check looks at the cells of one row (model + defense) and raises a :class:`Flag` that
names the cells behind it. A row with a flag of the following checks "needs adaptive
evaluation" (RobustBench's mark for unreliable entries): its robust numbers are upper bounds
that a stronger or adapted attack may lower. The checks follow Carlini et al., "On Evaluating
Adversarial Robustness" (2019), §5, and ART's gradient checks:

* ``non-monotone``: the robust metric rises with the budget, above its lowest value at any
  smaller budget (a larger ball contains the
  smaller one, so a working attack can only do better);
* ``single-step-stronger``: FGSM beats its own iterative versions (BIM, PGD, MI-FGSM) at
  the same budget;
* ``noise-stronger``: Gaussian noise of σ beats a gradient attack of ε = σ;
* ``iterative-not-stronger``: BIM, PGD or MI-FGSM leaves exactly FGSM's robust value at the
  same budget while there is something left to take away: the iterations gain nothing;
* ``black-box-stronger``: a score- or decision-based attack (Square, HopSkipJump) or a
  transfer attack beats every white-box gradient attack at the same budget;
* ``unbounded-above-chance``: accuracy under an unbounded (ε = 1) gradient attack stays
  above chance (:mod:`medbench.measuring.gradient_checks`);
* ``zero-gradients``: some evaluation samples have an all-zero or non-finite input gradient.

One check is of the model rather than of its evaluation (:data:`MODEL_CHECKS`):

* ``clean-at-chance``: a classifier has not learned the task, e.g. a training that
  collapsed to one class, when its clean AUC is at most 0.5, its clean accuracy is not
  significantly above the **majority-class rate** of the evaluated samples (one-sided exact
  binomial test at 5%; a constant prediction of the largest class scores that rate, which
  1/K understates on imbalanced data), or its balanced accuracy is at most 1/K. Cells logged
  before the majority rate was logged are compared with 1/K. A constant prediction keeps its
  accuracy under any
  attack, so its robust metrics measure nothing; boards rank such rows after every other row
  and mark them "at chance" instead of "needs adaptive evaluation".

Comparisons allow a tolerance of ``max(0.02, 1/n_eval)`` (one sample, at least 2 points),
since cells are measured on finite samples with random starts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from medbench.building.defending import parse_variant
from medbench.leaderboard.records import CellRecord
from medbench.measuring.metrics import mean_defined

SINGLE_STEP_VERSIONS: dict[str, tuple[str, ...]] = {"fgsm": ("bim", "pgd", "mifgsm")}
"""Single-step attacks and their iterative versions."""

BLACK_BOX_ATTACKS = frozenset({"square", "hsj"})
"""Attacks that use only scores or decisions of the model, never its gradients."""

GRADIENT_THREAT_MODELS = frozenset({"linf", "l2"})


def _plugin(attack_label: str) -> str:
    """The attack plugin behind a cell's label: ``pgd[max_iter=50]`` → ``pgd``."""
    return parse_variant(attack_label)[0]


CHECKS: tuple[str, ...] = (
    "non-monotone",
    "single-step-stronger",
    "noise-stronger",
    "black-box-stronger",
    "unbounded-above-chance",
    "iterative-not-stronger",
    "zero-gradients",
    "clean-at-chance",
)

MODEL_CHECKS = frozenset({"clean-at-chance"})
"""Checks that find the model, not its evaluation, wanting."""

NEEDS_ADAPTIVE = "needs adaptive evaluation"
AT_CHANCE = "at chance"
CHANCE_LEVEL = 0.05
"""The significance level of the test that a classifier beats its majority-class rate."""


def mark_of(check: str) -> str:
    """How boards and the CLI mark a row flagged ``check``: :data:`AT_CHANCE` or :data:`NEEDS_ADAPTIVE`."""
    return AT_CHANCE if check in MODEL_CHECKS else NEEDS_ADAPTIVE


AUC_CHANCE = 0.5


@dataclass(frozen=True)
class Flag:
    """One failed sanity check of one row."""

    check: str
    row: str
    message: str
    cells: tuple[str, ...]
    """Labels of the cells behind the flag (``model/defense/attack@budget``)."""

    @property
    def of_model(self) -> bool:
        """Whether the flag finds the model, not its evaluation, wanting (:data:`MODEL_CHECKS`)."""
        return self.check in MODEL_CHECKS

    @property
    def mark(self) -> str:
        """How boards and the CLI mark the row (:func:`mark_of`)."""
        return mark_of(self.check)

    def as_dict(self) -> dict[str, object]:
        """The flag as JSON data (``sanity.json``, ``medbench run --json``)."""
        return {"check": self.check, "row": self.row, "message": self.message, "cells": list(self.cells)}


CHECK_SAMPLES = 32
"""The gradient checks of :mod:`medbench.measuring.gradient_checks` look at this many evaluation samples
at most (the first ones)."""


def tolerance(cells: Iterable[CellRecord]) -> float:
    """``max(0.02, 1/n)`` for the smallest evaluation set among ``cells``."""
    sizes = [c.n_eval for c in cells if c.n_eval > 0]
    return max(0.02, 1.0 / min(sizes)) if sizes else 0.02


def primary_metric(cells: Sequence[CellRecord]) -> str:
    """The metric a board ranks by: ``dice`` (segmentation), ``auc`` (multi-label) or ``accuracy``."""
    if any(c.task == "segmentation" for c in cells):
        return "dice"
    if any("label_flip_rate" in c.metrics for c in cells):
        return "auc"
    return "accuracy"


def _robust(cell: CellRecord, metric: str) -> float:
    return cell.metric(f"robust_{metric}")


def _budget_key(cell: CellRecord) -> float:
    return round(cell.budget, 9)


def _non_monotone(row: Sequence[CellRecord], metric: str, tol: float) -> list[Flag]:
    flags = []
    series: dict[tuple[str, str], list[CellRecord]] = defaultdict(list)
    for cell in row:
        if cell.threat_model != "l2-minimal":
            series[(cell.attack, cell.threat)].append(cell)
    for cells in series.values():
        ordered = sorted(cells, key=lambda c: c.budget)
        lowest: CellRecord | None = None  # the weakest robust value at any smaller budget
        for larger in ordered:
            if lowest is not None:
                low, high = _robust(lowest, metric), _robust(larger, metric)
                if high > low + tol:
                    flags.append(
                        Flag(
                            "non-monotone",
                            larger.row,
                            f"robust {metric} of {larger.attack} rises from {low:.3f} to {high:.3f} "
                            "as the budget grows",
                            (lowest.label, larger.label),
                        )
                    )
            if not math.isnan(_robust(larger, metric)) and (
                lowest is None or _robust(larger, metric) < _robust(lowest, metric)
            ):
                lowest = larger
    return flags


def _iterative_not_stronger(row: Sequence[CellRecord], metric: str, tol: float) -> list[Flag]:
    """An iterative attack (BIM, PGD, MI-FGSM) that leaves exactly FGSM's robust value at the same
    budget, where there is something left to take away (above the tolerance): its steps gain
    nothing, a sign of masked or obfuscated gradients (a higher value is single-step-stronger;
    a value a little higher or lower within the tolerance is sampling noise, not flagged)."""
    flags = []
    direct = [c for c in row if c.threat == "direct"]
    for single, iterative in SINGLE_STEP_VERSIONS.items():
        singles = {_budget_key(c): c for c in direct if _plugin(c.attack) == single}
        for cell in (c for c in direct if _plugin(c.attack) in iterative):
            fgsm = singles.get(_budget_key(cell))
            if fgsm is None:
                continue
            value, rival = _robust(cell, metric), _robust(fgsm, metric)
            if rival > tol and value == rival:
                flags.append(
                    Flag(
                        "iterative-not-stronger",
                        cell.row,
                        f"{cell.attack} (iterative) leaves robust {metric} {value:.3f}, exactly "
                        f"{fgsm.attack}'s at the same budget: its steps gain nothing",
                        (fgsm.label, cell.label),
                    )
                )
    return flags


def _stronger_than(
    check: str,
    weak: Iterable[CellRecord],
    strong_candidates: Sequence[CellRecord],
    metric: str,
    tol: float,
    describe: str,
    same_norm: bool = True,
) -> list[Flag]:
    """Flag every ``weak`` cell that beats all of the ``strong_candidates`` at its budget
    (those of its own threat model unless ``same_norm`` is False)."""
    flags = []
    by_budget: dict[float, list[CellRecord]] = defaultdict(list)
    for cell in strong_candidates:
        by_budget[_budget_key(cell)].append(cell)
    for cell in weak:
        rivals = [
            c
            for c in by_budget.get(_budget_key(cell), [])
            if not math.isnan(_robust(c, metric))
            and (same_norm is False or c.threat_model == cell.threat_model)
        ]
        if not rivals:
            continue
        best = min(rivals, key=lambda c: _robust(c, metric))
        value, rival = _robust(cell, metric), _robust(best, metric)
        if value < rival - tol:
            flags.append(
                Flag(
                    check,
                    cell.row,
                    f"{cell.attack} ({describe}) leaves robust {metric} {value:.3f}, "
                    f"below {best.attack}'s {rival:.3f} at the same budget",
                    (cell.label, best.label),
                )
            )
    return flags


def _group_checks(row: Sequence[CellRecord]) -> list[Flag]:
    flags = []
    first = row[0]
    labels = tuple(c.label for c in row)
    # cells that did not log a check (NaN) are skipped: max() keeps a leading NaN
    zero = max((v for c in row if not math.isnan(v := c.metric("sanity_zero_gradients"))), default=math.nan)
    nonfinite = max(
        (v for c in row if not math.isnan(v := c.metric("sanity_nonfinite_gradients"))), default=math.nan
    )
    if (not math.isnan(zero) and zero > 0) or (not math.isnan(nonfinite) and nonfinite > 0):
        parts = []
        if zero > 0:
            parts.append(f"{zero:.0%} of the checked samples have an all-zero input gradient")
        if nonfinite > 0:
            parts.append(
                f"{nonfinite:.0%} a NaN or infinite one"
                if parts
                else f"{nonfinite:.0%} of the checked samples have a NaN or infinite input gradient"
            )
        flags.append(Flag("zero-gradients", first.row, "; ".join(parts), labels))
    checked = next((c for c in row if not math.isnan(c.metric("sanity_unbounded_accuracy"))), first)
    unbounded = checked.metric("sanity_unbounded_accuracy")
    chance = checked.metric("sanity_chance_accuracy")
    # the check sees at most CHECK_SAMPLES samples: one of them is 1/32, not 1/n_eval
    checked_samples = min(CHECK_SAMPLES, checked.n_eval) if checked.n_eval > 0 else CHECK_SAMPLES
    margin = max(tolerance(row), 1.0 / checked_samples)
    if not math.isnan(unbounded) and not math.isnan(chance) and unbounded > chance + margin:
        flags.append(
            Flag(
                "unbounded-above-chance",
                first.row,
                f"accuracy under an unbounded (ε = 1) gradient attack is {unbounded:.3f}, "
                f"above chance ({chance:.3f})",
                labels,
            )
        )
    return flags


def _clean_at_chance(row: Sequence[CellRecord], tol: float) -> list[Flag]:
    if any(c.task == "segmentation" for c in row):
        return []
    reasons = []
    auc = mean_defined(c.metric("clean_auc") for c in row)
    if auc <= AUC_CHANCE + tol:  # False for NaN
        reasons.append(f"clean AUC {auc:.3f} is at most chance ({AUC_CHANCE:.3f})")
    accuracy = mean_defined(c.metric("clean_accuracy") for c in row)
    majority = mean_defined(c.metric("majority_rate") for c in row)
    if not math.isnan(majority):
        reasons += _below_majority(accuracy, majority, min(c.n_eval for c in row))
        balanced = mean_defined(c.metric("clean_balanced_accuracy") for c in row)
        uniform = mean_defined(c.metric("sanity_chance_accuracy") for c in row)
        if balanced <= uniform + tol:  # False for NaN
            reasons.append(f"clean balanced accuracy {balanced:.3f} is at most chance ({uniform:.3f})")
    else:  # cells logged before the majority rate: one over the number of classes
        chance = mean_defined(c.metric("sanity_chance_accuracy") for c in row)
        if chance > 0 and accuracy <= chance + tol:  # multi-label data log a chance accuracy of 0
            reasons.append(f"clean accuracy {accuracy:.3f} is at most chance ({chance:.3f})")
    if not reasons:
        return []
    message = (
        "; ".join(reasons) + ": the model has not learned the task, so its robust metrics measure nothing"
    )
    return [Flag("clean-at-chance", row[0].row, message, tuple(c.label for c in row))]


def _below_majority(accuracy: float, majority: float, n: int) -> list[str]:
    """The reason to flag an accuracy that is not significantly above the majority-class rate
    (one-sided exact binomial test at 5%, ``scipy.stats.binomtest``); none otherwise."""
    if math.isnan(accuracy) or n <= 0 or majority >= 1:
        return []
    from scipy.stats import binomtest

    p_value = binomtest(round(accuracy * n), n, majority, alternative="greater").pvalue
    if p_value < CHANCE_LEVEL:
        return []
    return [
        f"clean accuracy {accuracy:.3f} is not significantly above the majority-class rate "
        f"{majority:.3f} of the {n} evaluated samples (one-sided binomial test, p = {p_value:.2g})"
    ]


def is_at_chance(flags: Iterable[Flag]) -> bool:
    """Whether ``flags`` (of one row) say that the model itself is not working."""
    return any(f.of_model for f in flags)


def needs_adaptive_evaluation(flags: Iterable[Flag]) -> bool:
    """Whether ``flags`` (of one row) include one against the evaluation (RobustBench's mark)."""
    return any(not f.of_model for f in flags)


def check_row(row: Sequence[CellRecord], metric: str) -> list[Flag]:
    """Every flag of one row's cells (all from the same model and defense)."""
    if not row:
        return []
    tol = tolerance(row)
    direct = [c for c in row if c.threat == "direct"]
    white_box = [
        c
        for c in direct
        if c.threat_model in GRADIENT_THREAT_MODELS and _plugin(c.attack) not in BLACK_BOX_ATTACKS
    ]
    flags = _non_monotone(row, metric, tol)
    for single, iterative in SINGLE_STEP_VERSIONS.items():
        flags += _stronger_than(
            "single-step-stronger",
            [c for c in direct if _plugin(c.attack) == single],
            [c for c in direct if _plugin(c.attack) in iterative],
            metric,
            tol,
            "single step",
        )
    flags += _stronger_than(
        "noise-stronger",
        [c for c in direct if c.threat_model == "noise"],
        white_box,
        metric,
        tol,
        "random noise",
        same_norm=False,
    )
    black_box = [c for c in row if c.threat == "transfer" or _plugin(c.attack) in BLACK_BOX_ATTACKS]
    flags += _stronger_than("black-box-stronger", black_box, white_box, metric, tol, "black box")
    at_chance = _clean_at_chance(row, tol)
    if not at_chance:  # a constant prediction leaves every attack the same value: that flag explains it
        flags += _iterative_not_stronger(row, metric, tol)
    return flags + _group_checks(row) + at_chance


def check_cells(cells: Sequence[CellRecord], metric: str | None = None) -> list[Flag]:
    """The flags of every row of a matrix, rows in first-seen order."""
    metric = metric or primary_metric(cells)
    rows: dict[str, list[CellRecord]] = defaultdict(list)
    for cell in cells:
        rows[cell.row].append(cell)
    return [flag for row in rows.values() for flag in check_row(row, metric)]
