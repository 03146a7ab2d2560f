"""Results: the ``--json`` document and the table printed at the end of a run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from medbench.config.budgets import format_budget
from medbench.measuring import per_sample

if TYPE_CHECKING:
    from medbench.engine.cells import CellResult

TABLE_METRICS = (
    ("clean_accuracy", "clean acc"),
    ("robust_accuracy", "robust acc"),
    ("attack_success_rate", "success"),
    ("linf_max", "L∞ max"),
    ("ssim_mean", "SSIM"),
    ("seconds", "seconds"),
)
SEGMENTATION_TABLE_METRICS = (
    ("clean_dice", "clean Dice"),
    ("robust_dice", "robust Dice"),
    ("clean_hd95", "clean HD95"),
    ("robust_hd95", "robust HD95"),
    ("linf_max", "L∞ max"),
    ("ssim_mean", "SSIM"),
    ("seconds", "seconds"),
)


def table_metrics(results: Sequence[CellResult]) -> tuple[tuple[str, str], ...]:
    """The columns for the task of the results (segmentation cells report Dice and HD95)."""
    if any("clean_dice" in result.metrics for result in results):
        return SEGMENTATION_TABLE_METRICS
    return TABLE_METRICS


def _json_number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def results_document(
    experiment: str, parent_run_id: str, dataset: str, results: Sequence[CellResult]
) -> dict[str, Any]:
    """The JSON document of DESIGN.md §4 (NaN and infinities become ``null``)."""
    cells = []
    for result in results:
        cell = result.cell
        entry: dict[str, Any] = {
            "dataset": dataset,
            "model": cell.model,
            "defense": cell.defense,
            "attack": cell.attack,
            "budget_name": cell.budget_name,
            "budget": cell.budget,
            "threat_model": cell.threat_model,
            "threat": cell.threat,
            "status": result.status,
            "run_id": cell.run_id,
            "metrics": {k: _json_number(v) for k, v in result.metrics.items()},
        }
        if cell.budget_native is not None:
            entry["budget_native"] = cell.budget_native
        if cell.surrogate is not None:
            entry["surrogate"] = cell.surrogate
        if result.error:
            entry["error"] = result.error
        if result.samples:
            entry["samples"] = per_sample.as_json(result.samples)
        cells.append(entry)
    return {"experiment": experiment, "parent_run_id": parent_run_id, "cells": cells}


def _format(value: float | None, name: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if name == "seconds" or name.endswith("hd95"):
        return f"{value:.1f}"
    if name == "linf_max":
        return f"{value * 255:.2f}/255"
    return f"{value:.3f}"


def results_table(results: Sequence[CellResult], title: str = "medbench results") -> Table:
    """A rich table, one row per cell."""
    table = Table(title=title, show_lines=False)
    for header in ("model", "defense", "attack", "budget"):
        table.add_column(header)
    columns = table_metrics(results)
    for _, header in columns:
        table.add_column(header, justify="right")
    table.add_column("status")
    for result in results:
        cell = result.cell
        failed = f"[red]FAILED[/] {escape(result.error or '')}"
        status = "[green]ok[/]" if result.status == "FINISHED" else failed
        table.add_row(
            escape(cell.model),
            escape(cell.defense),  # variants like dcnn[lambda_a=0] are not rich markup
            escape(cell.attack),
            f"{cell.budget_name}={cell.budget_native or format_budget(cell.budget)}",
            *(_format(result.metrics.get(name), name) for name, _ in columns),
            status,
        )
    return table
