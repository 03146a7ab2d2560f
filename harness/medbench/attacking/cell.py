"""One cell against one defended model: craft, check the output, predict, measure. No MLflow.

:func:`attack_cell` runs one (attack, budget) on the evaluation batches of one defended
model and returns its metrics and outputs; :func:`check_adversarial` refuses an attack's
output that leaves [0, 1] or its budget; :func:`craft_shared_budgets` crafts all budgets of
an attack that shares work across budgets (FGSM's one gradient) at once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from medbench.api import Attack, AttackResult, CellOutputs, Metric
from medbench.attacking.evaluation import (
    Batch,
    ClassificationEvaluator,
    CleanOutputs,
    TaskEvaluator,
    add_totals,
    as_attack_result,
    craft_splitting_on_oom,
)
from medbench.engine.cells import Cell
from medbench.errors import CellError, first_line
from medbench.measuring.per_sample import Samples, with_ids

RANGE_TOLERANCE = 1e-6
LINF_TOLERANCE = 1e-6
L2_TOLERANCE = 1e-5
BATCH_SEED_STRIDE = 1009
"""Batch ``i`` of a cell is attacked with seed ``cell seed + i * 1009``."""

SharedBatches = tuple[list[AttackResult], float]
"""An attack's batches for one budget crafted together with other budgets, and its share of the time."""


@dataclass
class CellRun:
    """What :func:`attack_cell` produced."""

    metrics: dict[str, float]
    adversarial: list[torch.Tensor] = field(default_factory=list)
    attacked: list[torch.Tensor] = field(default_factory=list)
    samples: Samples = field(default_factory=dict)
    """The per-sample outcomes, with their ids (:mod:`medbench.measuring.per_sample`)."""


def check_adversarial(cell: Cell, x: torch.Tensor, x_adv: torch.Tensor) -> None:
    """Raise :class:`CellError` if an attack's output leaves [0, 1] or its budget.

    The budget bounds a norm only under the threat models ``linf`` and ``l2``; ``l2-minimal``
    attacks (budget: a margin), ``noise`` and ``frequency`` are checked for range only.
    """
    if x_adv.shape != x.shape:
        raise CellError(
            f"attack {cell.attack!r} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}"
        )
    if not torch.isfinite(x_adv).all():
        raise CellError(f"attack {cell.attack!r} returned NaN or infinite values")
    low, high = float(x_adv.min()), float(x_adv.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise CellError(f"attack {cell.attack!r} left the valid range [0, 1]: min {low:.6g}, max {high:.6g}")
    delta = (x_adv - x).flatten(1)
    if cell.threat_model == "linf":
        linf = float(delta.abs().max()) if delta.numel() else 0.0
        if linf > cell.budget + LINF_TOLERANCE:
            raise CellError(
                f"attack {cell.attack!r} exceeded its budget: ||delta||_inf = {linf:.6g} > {cell.budget:.6g}"
            )
    elif cell.threat_model == "l2":
        l2 = float(delta.norm(dim=1).max()) if delta.numel() else 0.0
        if l2 > cell.budget + L2_TOLERANCE:
            raise CellError(
                f"attack {cell.attack!r} exceeded its budget: ||delta||_2 = {l2:.6g} > {cell.budget:.6g}"
            )


def attack_cell(
    cell: Cell,
    attack: Attack,
    evaluator: TaskEvaluator,
    estimator: Any,
    source: Any,
    batches: list[Batch],
    clean: CleanOutputs,
    seed: int,
    *,
    shared: SharedBatches | None = None,
    on_batch: Callable[[], None] = lambda: None,
    on_split: Callable[[str, int], None] = lambda label, size: None,
) -> CellRun:
    """Attack every batch, check each output, predict on it, and compute the cell's metrics.

    Args:
        cell: The cell (its attack, budget and threat model).
        attack: The configured attack plugin.
        evaluator: The task's evaluator.
        estimator: The ART estimator of the defended model (predictions).
        source: The estimator the attack crafts on: ``estimator``, or a transfer surrogate's.
        batches: The evaluation batches.
        clean: The defended model's clean outputs on ``batches``.
        seed: The cell's seed.
        shared: The batches if they were crafted already (:func:`craft_shared_budgets`).
        on_batch: Called after each batch (progress).
        on_split: Called with the cell's label and the batch size when a batch is attacked
            in halves after running out of device memory.

    Raises:
        CellError: When the attack's output or the model's outputs on it are invalid.
    """
    started = time.perf_counter()
    run = CellRun(metrics={})
    totals: dict[str, float] = {}
    for number, (x, y) in enumerate(batches):
        crafted = (
            shared[0][number]
            if shared is not None
            # copies: an attack that perturbs its input in place must not change the clean
            # batch that later cells and the metrics read
            else craft_splitting_on_oom(
                evaluator,
                attack,
                source,
                x.clone(),
                y.clone(),
                cell.budget,
                seed + number * BATCH_SEED_STRIDE,
                on_split=functools.partial(on_split, cell.label),
            )
        )
        add_totals(totals, crafted.totals)
        check_adversarial(cell, x, crafted.x_adv)
        run.adversarial.append(crafted.x_adv.detach())
        outputs = evaluator.adversarial_outputs(estimator, run.adversarial[-1])
        if not torch.isfinite(outputs.float()).all():
            raise CellError("the model returned NaN or infinite logits on the adversarial inputs")
        run.attacked.append(outputs)
        on_batch()
    if evaluator.device.type == "cuda":
        torch.cuda.synchronize(evaluator.device)
    seconds = time.perf_counter() - started + (shared[1] if shared is not None else 0.0)
    run.metrics, outcomes = evaluator.measure(batches, run.adversarial, clean, run.attacked)
    run.metrics["seconds"] = seconds
    run.samples = with_ids(outcomes, evaluator.bundle.fingerprint)
    samples = sum(len(x) for x, _ in batches)
    run.metrics.update({f"{name}_mean": total / samples for name, total in totals.items()})
    return run


def craft_shared_budgets(
    evaluator: TaskEvaluator,
    source: Any,
    attacks: dict[str, Attack],
    cells: list[Cell],
    batches: list[Batch],
    seeds: dict[int, int],
    notify: Callable[[str], None],
) -> dict[int, SharedBatches]:
    """Adversarial batches of the attacks that share work across budgets (FGSM's one gradient).

    For every attack that overrides :meth:`~medbench.api.Attack.generate_budgets` and runs at
    several budgets here, its batches are crafted for all budgets at once, before the cells.
    Returns, per cell (by ``id``), its batches and its share of the crafting time. An attack
    whose shared crafting fails is left to its cells, which then fail (or not) one by one.

    Args:
        seeds: Each cell's seed, by ``id`` of the cell.
    """
    if not isinstance(evaluator, ClassificationEvaluator):
        return {}
    result: dict[int, SharedBatches] = {}
    for name, attack in attacks.items():
        mine = [c for c in cells if c.attack == name]
        if len(mine) < 2 or type(attack).generate_budgets is Attack.generate_budgets:
            continue
        started = time.perf_counter()
        per_cell: list[list[AttackResult]] = [[] for _ in mine]
        try:
            for number, (x, y) in enumerate(batches):
                batch_seeds = [seeds[id(c)] + number * BATCH_SEED_STRIDE for c in mine]
                crafted = attack.generate_budgets(source, x, y, [c.budget for c in mine], seeds=batch_seeds)
                for results, item in zip(per_cell, crafted, strict=True):
                    results.append(as_attack_result(item))
        except Exception as error:
            notify(f"{name}: crafting all budgets at once failed ({first_line(error)})")
            continue
        if evaluator.device.type == "cuda":
            torch.cuda.synchronize(evaluator.device)
        share = (time.perf_counter() - started) / len(mine)
        for cell, results in zip(mine, per_cell, strict=True):
            result[id(cell)] = (results, share)
    return result


def plugin_metrics(
    metrics: list[Metric],
    cell: Cell,
    task: str,
    batches: list[Batch],
    run: CellRun,
    clean: list[torch.Tensor],
    notify: Callable[[str], None],
) -> dict[str, float]:
    """The values of the metric plugins for one cell (none when the samples differ in size)."""
    if not metrics:
        return {}
    if len({x.shape[1:] for x, _ in batches}) > 1:
        notify("metric plugins skipped: the evaluation samples differ in size")
        return {}
    outputs = CellOutputs(
        x_clean=torch.cat([x for x, _ in batches]).cpu(),
        x_adv=torch.cat(run.adversarial).cpu(),
        labels=torch.cat([y for _, y in batches]).cpu(),
        clean_logits=torch.cat(clean).cpu(),
        adv_logits=torch.cat(run.attacked).cpu(),
        budget=cell.budget,
        budget_name=cell.budget_name,
        task=task,  # type: ignore[arg-type]
    )
    return {metric.name: float(metric.compute(outputs)) for metric in metrics}


def check_output_shapes(
    clean: CleanOutputs, batches: list[Batch], cell: Cell, task: str, num_classes: int, multilabel: bool
) -> None:
    """Refuse a model whose outputs are not one score per class (a label per voxel for segmentation)."""
    for outputs, (x, _) in zip(clean.outputs, batches, strict=True):
        if task == "classification":
            expected: tuple[int, ...] = (len(x), num_classes)
            shape_ok = tuple(outputs.shape) == expected or (
                num_classes == 2 and not multilabel and tuple(outputs.shape) == (len(x), 1)
            )
        else:  # segmentation predictions are label maps (N, *spatial)
            expected = (len(x), *x.shape[2:])
            shape_ok = tuple(outputs.shape) == expected
        if not shape_ok:
            raise CellError(
                f"model {cell.model!r} with defense {cell.defense!r} returned outputs of shape "
                f"{tuple(outputs.shape)}; expected {expected}"
            )
