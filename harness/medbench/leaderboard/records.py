"""Reading a suite's cells back from MLflow: the input of the leaderboard.

A leaderboard is built from the MLflow store alone, never from a process's memory, so that
the board of a suite can be rebuilt at any time from the runs that produced it (and from
runs made on other machines against a shared store).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medbench.errors import UsageError
from medbench.recording import layout
from medbench.recording.environment import environment_of


@dataclass(frozen=True)
class CellRecord:
    """One finished (or failed) cell, as logged by ``medbench run``."""

    run_id: str
    parent_run_id: str
    model: str
    defense: str
    attack: str
    budget_name: str
    budget: float
    threat_model: str
    threat: str
    """``direct`` (crafted on the target) or ``transfer`` (crafted on a surrogate)."""
    status: str
    metrics: dict[str, float]
    dataset: str
    dataset_fingerprint: str
    seed: int
    n_eval: int
    start_time: int
    """Milliseconds since the epoch (MLflow's ``start_time``)."""
    budget_native: str | None = None
    surrogate: str | None = None
    task: str = "classification"
    versions: dict[str, str] = field(default_factory=dict)
    """``medbench`` and every plugin involved, with their versions."""
    accelerator: str = ""
    error: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    """Every MLflow param of the cell: the settings behind it (:mod:`medbench.leaderboard.configuration`)."""
    environment: dict[str, str] = field(default_factory=dict)
    """Library versions, commit and platform of the run (``medbench.env.*`` tags; empty for older runs)."""

    @property
    def row(self) -> str:
        """``model/defense``: one row of the leaderboard."""
        return f"{self.model}/{self.defense}"

    @property
    def label(self) -> str:
        """``model/defense/attack@budget`` (``[transfer]`` for transfer cells)."""
        from medbench.config.budgets import format_budget

        budget = self.budget_native or format_budget(self.budget)
        suffix = f" [transfer from {self.surrogate}]" if self.threat == "transfer" else ""
        return f"{self.row}/{self.attack}@{budget}{suffix}"

    def metric(self, name: str) -> float:
        """A metric's value; NaN when the cell did not log it."""
        value = self.metrics.get(name)
        return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class MatrixRecord:
    """A parent run (one ``medbench run``)."""

    run_id: str
    name: str
    suite: str
    status: str
    start_time: int
    end_time: int | None
    accelerator: str


def _versions(tags: dict[str, str]) -> dict[str, str]:
    versions = {"medbench": tags.get(layout.TAG_VERSION, "")}
    for item in filter(None, tags.get(layout.TAG_PLUGINS, "").split(",")):
        name, _, version = item.partition("==")
        versions[name] = version
    return versions


def _float(text: str | None, default: float = math.nan) -> float:
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default


def _cell(run: Any) -> CellRecord:
    params: dict[str, str] = run.data.params
    tags: dict[str, str] = run.data.tags
    surrogate = params.get("surrogate")
    task = "segmentation" if any(k.endswith("_dice") for k in run.data.metrics) else "classification"
    return CellRecord(
        run_id=run.info.run_id,
        parent_run_id=tags.get("mlflow.parentRunId", ""),
        model=params.get("model", ""),
        defense=params.get("defense", ""),
        attack=params.get("attack", ""),
        budget_name=params.get("budget_name", ""),
        budget=_float(params.get("budget")),
        threat_model=params.get("threat_model", ""),
        threat=tags.get(layout.TAG_THREAT) or params.get("threat", "direct"),
        status=run.info.status,
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        dataset=params.get("dataset", ""),
        dataset_fingerprint=tags.get(layout.TAG_FINGERPRINT, ""),
        seed=int(_float(params.get("seed"), 0)),
        n_eval=int(_float(params.get("n_eval"), 0)),
        start_time=int(run.info.start_time or 0),
        budget_native=params.get("budget_native"),
        surrogate=None if surrogate in (None, "None", "") else surrogate,
        task=task,
        versions=_versions(tags),
        accelerator=tags.get(layout.TAG_ACCELERATOR, ""),
        error=tags.get(layout.TAG_ERROR),
        environment=environment_of(tags),
        params=dict(params),
    )


def load_records(tracking_uri: str, experiment: str) -> tuple[list[CellRecord], list[MatrixRecord]]:
    """Every cell and parent run of an experiment (a suite's runs), oldest first.

    Raises:
        UsageError: When the experiment does not exist or holds no cell.
    """
    from mlflow.tracking import MlflowClient

    from medbench.recording.tracking import quiet_mlflow

    quiet_mlflow()
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        from medbench.errors import unknown_name_message

        raise UsageError(f"{unknown_name_message('experiment', experiment, names)} in {tracking_uri}")
    runs = client.search_runs(
        [found.experiment_id], max_results=50000, order_by=["attributes.start_time ASC"]
    )
    cells = [_cell(run) for run in runs if run.data.tags.get(layout.TAG_ROLE) == layout.ROLE_CELL]
    matrices = [
        MatrixRecord(
            run_id=run.info.run_id,
            name=run.data.tags.get("mlflow.runName", ""),
            suite=run.data.tags.get(layout.TAG_SUITE, ""),
            status=run.info.status,
            start_time=int(run.info.start_time or 0),
            end_time=int(run.info.end_time) if run.info.end_time else None,
            accelerator=run.data.tags.get(layout.TAG_ACCELERATOR, ""),
        )
        for run in runs
        if run.data.tags.get(layout.TAG_ROLE) == layout.ROLE_MATRIX
    ]
    if not cells:
        raise UsageError(
            f"experiment {experiment!r} in {tracking_uri} has no cells: run `medbench run` first"
        )
    return cells, matrices


def latest_cells(cells: list[CellRecord]) -> list[CellRecord]:
    """The newest finished record of every (row, attack, budget, threat, surrogate), in first-seen order.

    A suite run twice (or resumed) leaves several runs of the same cell; the board shows the
    newest one that finished. Cells that never finished are left out (and reported by the
    caller); a cell from another dataset fingerprint than the newest cell is left out too
    (boards first keep one configuration: :func:`medbench.leaderboard.configuration.one_configuration`).
    """
    if not cells:
        return []
    fingerprint = max(cells, key=lambda c: c.start_time).dataset_fingerprint
    newest: dict[tuple[Any, ...], CellRecord] = {}
    for cell in sorted(cells, key=lambda c: c.start_time):
        if cell.status != "FINISHED" or cell.dataset_fingerprint != fingerprint:
            continue
        key = (
            cell.model,
            cell.defense,
            cell.attack,
            cell.budget_name,
            round(cell.budget, 12),
            cell.threat,
            cell.surrogate,
        )
        newest.pop(key, None)
        newest[key] = cell
    return list(newest.values())


def load_samples(tracking_uri: str, cells: list[CellRecord]) -> dict[str, dict[str, Any] | None]:
    """Each cell's per-sample outcomes (``per_sample.npz``) by run id; None where a cell has none
    (logged before medbench kept them, or an artifact store without the file)."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from medbench.measuring import per_sample

    client = MlflowClient(tracking_uri=tracking_uri)
    found: dict[str, dict[str, Any] | None] = {}
    with tempfile.TemporaryDirectory() as directory:
        for cell in cells:
            try:
                path = client.download_artifacts(cell.run_id, layout.ARTIFACT_PER_SAMPLE, directory)
                with open(path, "rb") as handle:
                    found[cell.run_id] = per_sample.load(handle.read())
            except Exception:  # no such artifact: the board falls back to the logged metrics
                found[cell.run_id] = None
    return found
