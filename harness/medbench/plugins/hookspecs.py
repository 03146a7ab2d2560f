"""Hook specifications: what a medbench plugin can implement.

A plugin is a Python module (or object) exposed through the ``medbench`` entry-point
group of its distribution::

    [project.entry-points.medbench]
    my_plugin = "my_package.plugin"

and implementing any of these hooks with ``@medbench.hookimpl``. Every hook is optional.

Registration hooks run once when the harness starts; each receives a ``register``
callback that takes one plugin object (an instance of a class from :mod:`medbench.api`).
Lifecycle hooks run during ``medbench run``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

from medbench import PROJECT_NAME

if TYPE_CHECKING:
    import click

    from medbench.api import Attack, Dataset, Defense, Metric, Model
    from medbench.engine.cells import Cell, CellResult, MatrixPlan

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def register_attacks(register: Callable[[Attack], None]) -> None:
    """Register attacks.

    Args:
        register: Call it once per :class:`medbench.api.Attack` instance. A name already
            registered by another plugin is an error naming both plugins.

    Example::

        @hookimpl
        def register_attacks(register):
            register(MyAttack())
    """


@hookspec
def register_defenses(register: Callable[[Defense], None]) -> None:
    """Register defenses.

    Args:
        register: Call it once per :class:`medbench.api.Defense` instance.
    """


@hookspec
def register_datasets(register: Callable[[Dataset], None]) -> None:
    """Register datasets.

    Args:
        register: Call it once per :class:`medbench.api.Dataset` instance.
    """


@hookspec
def register_models(register: Callable[[Model], None]) -> None:
    """Register models.

    Args:
        register: Call it once per :class:`medbench.api.Model` instance.
    """


@hookspec
def register_metrics(register: Callable[[Metric], None]) -> None:
    """Register extra per-cell metrics.

    Args:
        register: Call it once per :class:`medbench.api.Metric` instance. Its value is
            logged to MLflow and JSON under the metric's name for every cell of a task
            the metric supports.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``medbench`` command line.

    Args:
        cli: The top-level click group; call ``cli.add_command(...)``.
    """


@hookspec
def before_matrix(matrix: MatrixPlan) -> None:
    """Called once before the first cell runs.

    Args:
        matrix: The :class:`medbench.engine.cells.MatrixPlan` (dataset, cells, parent MLflow run id).
    """


@hookspec
def before_cell(cell: Cell) -> None:
    """Called before each cell's attack starts.

    Args:
        cell: The :class:`medbench.engine.cells.Cell` about to run (with its MLflow run id).
    """


@hookspec
def after_cell(cell: Cell, result: CellResult) -> None:
    """Called after each cell, finished or failed.

    Args:
        cell: The :class:`medbench.engine.cells.Cell` that ran.
        result: Its :class:`medbench.engine.cells.CellResult` (status, metrics, error).
    """


@hookspec
def after_matrix(matrix: MatrixPlan, results: list[CellResult]) -> None:
    """Called once after the last cell, before the parent MLflow run is closed.

    Args:
        matrix: The :class:`medbench.engine.cells.MatrixPlan`.
        results: Every :class:`medbench.engine.cells.CellResult`, in matrix order.
    """
