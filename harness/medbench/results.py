"""The results of a matrix, from Python: a DataFrame, the ranked board, the curves, the flags.

:func:`medbench.evaluate` and :func:`medbench.run` return a :class:`Results`;
:func:`load_results` reads finished runs back from MLflow into one. The board and the curves
are built by the same code as ``medbench leaderboard`` from the same MLflow records.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medbench.errors import UsageError
from medbench.leaderboard.records import CellRecord, MatrixRecord, latest_cells, load_records
from medbench.measuring.sanity import Flag, check_cells, primary_metric
from medbench.recording import layout

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

FRAME_COLUMNS = (
    "model",
    "defense",
    "attack",
    "budget_name",
    "budget",
    "budget_text",
    "threat_model",
    "threat",
    "seed",
    "n_eval",
    "status",
    "run_id",
)
"""The leading columns of :attr:`Results.frame`; every metric follows, one column each."""


@dataclass
class Results:
    """The cells of one run (or of an experiment), as MLflow holds them.

    Attributes:
        experiment: The MLflow experiment.
        tracking_uri: The MLflow store.
        records: One record per cell (finished or failed), in matrix order.
        matrices: The parent runs behind the records.
        parent_run_id: The run's parent run, when the results are one run's.
        sanity: The sanity flags of the finished cells (:mod:`medbench.measuring.sanity`).
    """

    experiment: str
    tracking_uri: str
    records: list[CellRecord]
    matrices: list[MatrixRecord] = field(default_factory=list)
    parent_run_id: str | None = None
    sanity: list[Flag] = field(default_factory=list)
    suite: str = ""
    rank_by: str | None = None
    _store: Any = field(default=None, repr=False)
    """A temporary store kept alive as long as these results (``tracking_uri=False``)."""
    _samples: dict[str, Any] = field(default_factory=dict, repr=False)
    """Per-sample arrays already read, by cell run id."""

    @property
    def frame(self) -> pd.DataFrame:
        """One row per cell: model, defense, attack, budget, threat model, status, every metric."""
        import pandas as pd

        rows = []
        for record in self.records:
            row: dict[str, Any] = {
                "model": record.model,
                "defense": record.defense,
                "attack": record.attack,
                "budget_name": record.budget_name,
                "budget": record.budget,
                "budget_text": record.label.rsplit("@", 1)[-1].split(" ")[0],
                "threat_model": record.threat_model,
                "threat": record.threat,
                "seed": record.seed,
                "n_eval": record.n_eval,
                "status": record.status,
                "run_id": record.run_id,
            }
            row.update(record.metrics)
            rows.append(row)
        frame = pd.DataFrame(rows)
        if frame.empty:
            return pd.DataFrame(columns=list(FRAME_COLUMNS))
        metrics = sorted(c for c in frame.columns if c not in FRAME_COLUMNS)
        return frame[[*FRAME_COLUMNS, *metrics]]

    @property
    def finished(self) -> list[CellRecord]:
        """The newest finished record of each cell (what the board ranks)."""
        return latest_cells(self.records)

    def board(self, fmt: str = "table", *, metric: str | None = None, width: int | None = None) -> str:
        """The ranked board of these cells, as ``medbench leaderboard`` renders it.

        Args:
            fmt: ``table`` (terminal text), ``markdown``, ``html``, ``csv`` or ``json``.
            metric: Rank by ``accuracy``, ``auc`` or ``dice`` (default: the suite's, else the task's).
            width: Columns of the ``table`` format.

        Raises:
            UsageError: On an unknown format or metric, or when no cell finished.
        """
        from medbench.leaderboard.board import Board, render_board
        from medbench.leaderboard.entries import build_entries
        from medbench.leaderboard.render import FORMATS

        if fmt not in FORMATS:
            from medbench.errors import unknown_name_message

            raise UsageError(unknown_name_message("board format", fmt, FORMATS))
        cells = self._ranked_cells()
        suite = self.suite or self.experiment
        samples = {cell.run_id: self._samples_or_none(cell.run_id) for cell in cells}
        entries = build_entries(cells, self.matrices, suite, self.experiment, metric or self.rank_by, samples)
        board = Board(suite, self.experiment, self.tracking_uri, entries, cells, self.matrices, 0)
        return render_board(board, fmt, width)

    def curves(self, metric: str | None = None) -> Figure:
        """The robustness curves (robust metric against budget, a line per model/defense)."""
        from medbench.leaderboard.curves import robustness_figure

        cells = self._ranked_cells()
        chosen = metric or self.rank_by or primary_metric(cells)
        return robustness_figure(cells, f"robust_{chosen}", f"{self.suite or self.experiment}")

    def samples(self, run_id: str | None = None) -> pd.DataFrame:
        """Per-sample outcomes, one row per sample and cell (:mod:`medbench.measuring.per_sample`).

        Args:
            run_id: One cell's run; default: every finished cell.

        Returns:
            Columns ``run_id``, ``model``, ``defense``, ``attack``, ``budget``, ``budget_text``,
            ``index`` (the sample's position in the test split), ``fingerprint``, then the
            cell's per-sample arrays (per-class arrays as ``clean_dice_<k>``...; the logits
            are left out: :func:`cell_samples` has them).
        """
        import pandas as pd

        frames = []
        for record in self.finished:
            if run_id is not None and record.run_id != run_id:
                continue
            arrays = self.cell_samples(record.run_id)
            columns: dict[str, Any] = {}
            for key, array in arrays.items():
                if key.endswith("_logits") or key == "format_version":
                    continue
                if array.ndim == 0:
                    columns[key] = [array.item()] * len(arrays["index"])
                elif array.ndim == 1:
                    columns[key] = array
                else:
                    columns.update({f"{key}_{k}": array[:, k] for k in range(array.shape[1])})
            frame = pd.DataFrame(columns)
            label = record.label.rsplit("@", 1)[-1].split(" ")[0]
            for name, value in reversed(
                [("run_id", record.run_id), ("model", record.model), ("defense", record.defense),
                 ("attack", record.attack), ("budget", record.budget), ("budget_text", label)]
            ):  # fmt: skip
                frame.insert(0, name, value)
            frames.append(frame)
        if run_id is not None and not frames:
            raise UsageError(f"no finished cell {run_id!r} in these results")
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def cell_samples(self, run_id: str) -> dict[str, Any]:
        """One cell's per-sample arrays as logged (``per_sample.npz``), read from the store once.

        Raises:
            UsageError: When the cell has no per-sample artifact (logged by an older medbench).
        """
        if run_id not in self._samples:
            from mlflow.tracking import MlflowClient

            from medbench.measuring import per_sample

            client = MlflowClient(tracking_uri=self.tracking_uri)
            try:
                with tempfile.TemporaryDirectory() as directory:
                    path = client.download_artifacts(run_id, layout.ARTIFACT_PER_SAMPLE, directory)
                    with open(path, "rb") as handle:
                        self._samples[run_id] = per_sample.load(handle.read())
            except Exception as error:
                raise UsageError(
                    f"cell {run_id} has no {layout.ARTIFACT_PER_SAMPLE} (logged before medbench kept "
                    "per-sample outcomes): run it again with --rerun"
                ) from error
        return self._samples[run_id]

    def _samples_or_none(self, run_id: str) -> dict[str, Any] | None:
        try:
            return self.cell_samples(run_id)
        except UsageError:
            return None

    def _ranked_cells(self) -> list[CellRecord]:
        from medbench.leaderboard.configuration import one_configuration

        cells = latest_cells(one_configuration(self.records)[0])
        if not cells:
            raise UsageError(f"no cell of experiment {self.experiment!r} finished: nothing to rank")
        return cells


def results_of_runs(
    tracking_uri: str,
    experiment: str,
    run_ids: Iterable[str | None],
    *,
    parent_run_id: str | None = None,
    sanity: list[Flag] | None = None,
    suite: str = "",
    rank_by: str | None = None,
    store: Any = None,
) -> Results:
    """The :class:`Results` of the given cell runs, read back from the store."""
    wanted = [run_id for run_id in run_ids if run_id]
    cells, matrices = load_records(tracking_uri, experiment)
    by_id = {cell.run_id: cell for cell in cells}
    records = [by_id[run_id] for run_id in wanted if run_id in by_id]
    parents = {record.parent_run_id for record in records}
    results = Results(
        experiment=experiment,
        tracking_uri=tracking_uri,
        records=records,
        matrices=[m for m in matrices if m.run_id in parents],
        parent_run_id=parent_run_id,
        suite=suite,
        rank_by=rank_by,
        _store=store,
    )
    results.sanity = sanity if sanity is not None else _flags(results)
    return results


def load_results(
    experiment: str | None = None, run_id: str | None = None, tracking_uri: str | None = None
) -> Results:
    """Read finished runs back from MLflow.

    Args:
        experiment: The experiment (a suite's name, or ``--experiment``); with ``run_id`` it
            may be left out.
        run_id: A parent run (one ``medbench run`` or :func:`medbench.evaluate`): its cells,
            including those it reused from earlier runs. Without it, the newest record of
            every cell of the experiment.
        tracking_uri: The store (default: as ``medbench run``).

    Raises:
        UsageError: When neither is given, or the experiment or run does not exist.
    """
    from medbench.recording.tracking import resolve_tracking_uri

    if experiment is None and run_id is None:
        raise UsageError("load_results needs an experiment or a run_id")
    uri = resolve_tracking_uri(tracking_uri)
    if run_id is None:
        assert experiment is not None
        cells, matrices = load_records(uri, experiment)
        results = Results(experiment, uri, latest_cells(cells) + _failed(cells), matrices)
        results.suite = matrices[-1].suite if matrices else experiment
        results.sanity = _flags(results)
        return results
    parent, cell_ids = _parent_run(uri, run_id)
    if experiment is not None and experiment != parent:
        raise UsageError(f"run {run_id!r} belongs to experiment {parent!r}, not {experiment!r}")
    name = parent
    return results_of_runs(uri, name, cell_ids, parent_run_id=run_id)


def _failed(cells: list[CellRecord]) -> list[CellRecord]:
    finished = {(c.row, c.attack, c.budget_name, c.budget) for c in cells if c.status == "FINISHED"}
    return [
        c
        for c in cells
        if c.status != "FINISHED" and (c.row, c.attack, c.budget_name, c.budget) not in finished
    ]


def _parent_run(tracking_uri: str, run_id: str) -> tuple[str, list[str]]:
    """The experiment of a parent run and its cells' run ids (from its ``results.json``)."""
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as error:
        raise UsageError(f"no run {run_id!r} in {tracking_uri}") from error
    if run.data.tags.get(layout.TAG_ROLE) != layout.ROLE_MATRIX:
        raise UsageError(f"run {run_id!r} is not the parent run of a medbench matrix")
    experiment = client.get_experiment(run.info.experiment_id).name
    try:
        with tempfile.TemporaryDirectory() as directory:
            path = client.download_artifacts(run_id, layout.ARTIFACT_RESULTS, directory)
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
        return experiment, [cell["run_id"] for cell in document["cells"]]
    except Exception:  # a run that never finished has no results.json: its own cells
        children = client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=50000
        )
        return experiment, [child.info.run_id for child in reversed(children)]


def _flags(results: Results) -> list[Flag]:
    cells = results.finished
    if not cells:
        return []
    metric = results.rank_by
    if metric is None or all(math.isnan(c.metric(f"robust_{metric}")) for c in cells):
        metric = primary_metric(cells)
    return check_cells(cells, metric)
