"""Progress display on stderr: one bar for the matrix, one for the current cell."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from medbench.building.training import TrainingHistory
    from medbench.engine.cells import Cell, CellResult


class RichProgress:
    """Rich progress bars; use as a context manager."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._matrix_task: Any = None
        self._cell_task: Any = None
        self._training_task: Any = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start_matrix(self, total_cells: int) -> None:
        self._matrix_task = self._progress.add_task("matrix", total=total_cells)

    def start_cell(self, cell: Cell, total_batches: int) -> None:
        description = escape(f"  {cell.label}")
        if self._cell_task is None:
            self._cell_task = self._progress.add_task(description, total=total_batches)
        else:
            self._progress.reset(self._cell_task, total=total_batches, description=description)

    def advance_cell(self) -> None:
        if self._cell_task is not None:
            self._progress.advance(self._cell_task)

    def end_cell(self, result: CellResult) -> None:
        if self._matrix_task is not None:
            self._progress.advance(self._matrix_task)
        if result.status != "FINISHED":
            label, error = escape(result.cell.label), escape(str(result.error))
            self.console.print(f"[red]cell {label} FAILED:[/] {error}")

    def training(self, label: str, epoch: int, epochs: int, loss: float, val_accuracy: float) -> None:
        description = escape(f"  training {label} (loss {loss:.3f}, val {val_accuracy:.3f})")
        if self._training_task is None:
            self._training_task = self._progress.add_task(description, total=epochs)
        self._progress.update(self._training_task, completed=epoch, total=epochs, description=description)
        if epoch == epochs:
            self._progress.remove_task(self._training_task)
            self._training_task = None

    def trained(self, label: str, history: TrainingHistory) -> None:
        accuracies = " ".join(f"{a:.3f}" for a in history.val_accuracy)
        kept = f", kept epoch {history.best_epoch}" if history.best_epoch is not None else ""
        self.console.print(f"trained {label}: validation score by epoch {accuracies}{kept}", markup=False)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False)


class QuietProgress:
    """No display (library use)."""

    def start_matrix(self, total_cells: int) -> None: ...
    def start_cell(self, cell: Cell, total_batches: int) -> None: ...
    def advance_cell(self) -> None: ...
    def end_cell(self, result: CellResult) -> None: ...
    def training(self, label: str, epoch: int, epochs: int, loss: float, val_accuracy: float) -> None: ...
    def trained(self, label: str, history: TrainingHistory) -> None: ...
    def message(self, text: str) -> None: ...
