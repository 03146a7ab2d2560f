"""A suite's leaderboard from its MLflow runs: collect, rank, check, render, write."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from medbench.leaderboard.configuration import Excluded, one_configuration
from medbench.leaderboard.curves import plot_robustness_curves
from medbench.leaderboard.entries import LeaderboardEntry, build_entries
from medbench.leaderboard.records import CellRecord, MatrixRecord, latest_cells, load_records, load_samples
from medbench.leaderboard.render import csv_text, full_width, html_page, json_text, markdown, rich_table
from medbench.recording import layout


@dataclass
class Board:
    """The ranked entries of one experiment and the cells behind them."""

    suite: str
    experiment: str
    tracking_uri: str
    entries: list[LeaderboardEntry]
    cells: list[CellRecord]
    matrices: list[MatrixRecord]
    unfinished: int
    """Cells of the experiment that never finished (left out of the board)."""
    excluded: list[Excluded] = field(default_factory=list)
    """Finished cells of other settings than the board's (:mod:`medbench.leaderboard.configuration`)."""

    @property
    def title(self) -> str:
        dataset = self.entries[0].dataset if self.entries else ""
        return f"medbench leaderboard: {self.suite} on {dataset}"

    @property
    def robust_metric(self) -> str:
        return f"robust_{self.entries[0].metric}" if self.entries else "robust_accuracy"


def load_board(
    tracking_uri: str, experiment: str, suite: str | None = None, metric: str | None = None
) -> Board:
    """Read an experiment's cells and build its ranked entries (the newest finished run of each cell).

    ``metric`` ranks the rows (see :func:`~medbench.leaderboard.entries.build_entries`)."""
    cells, matrices = load_records(tracking_uri, experiment)
    kept, excluded = one_configuration(cells)
    latest = latest_cells(kept)
    suites = [m.suite for m in matrices if m.suite]
    name = suite or (suites[-1] if suites else experiment)
    entries = build_entries(latest, matrices, name, experiment, metric, load_samples(tracking_uri, latest))
    finished_keys = {c.run_id for c in latest}
    unfinished = sum(1 for c in cells if c.status != "FINISHED" and c.run_id not in finished_keys)
    return Board(name, experiment, tracking_uri, entries, latest, matrices, unfinished, excluded)


def _examples(board: Board, directory: Path) -> dict[str, list[tuple[str, Path]]]:
    """Download every cell's ``examples.png``; a missing artifact is skipped."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=board.tracking_uri)
    grids: dict[str, list[tuple[str, Path]]] = {}
    for cell in sorted(board.cells, key=lambda c: (c.row, c.attack, c.budget)):
        target = directory / cell.run_id
        target.mkdir(parents=True, exist_ok=True)
        try:
            path = Path(client.download_artifacts(cell.run_id, layout.ARTIFACT_EXAMPLES, str(target)))
        except Exception:  # an artifact store without the file: the page shows the rest
            continue
        grids.setdefault(cell.row, []).append((cell.label, path))
    return grids


def render_board(board: Board, fmt: str, width: int | None = None) -> str:
    """The board in one of :data:`~medbench.leaderboard.render.FORMATS`."""
    if fmt == "markdown":
        return markdown(board.entries, board.title, board.excluded)
    if fmt == "csv":
        return csv_text(board.entries)
    if fmt == "json":
        return json_text(board.entries)
    if fmt == "html":
        with tempfile.TemporaryDirectory() as directory:
            curves = Path(directory) / layout.ARTIFACT_CURVES
            plot_robustness_curves(board.cells, board.robust_metric, curves, board.title)
            examples = _examples(board, Path(directory))
            return html_page(board.entries, board.title, curves, examples, board.excluded)
    table = rich_table(board.entries, board.title)
    console = Console(width=width or full_width(table), record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()
