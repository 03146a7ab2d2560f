"""MLflow logging (DESIGN.md §6): one parent run per ``medbench run``, one nested run per cell.

The tracking URI is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
``sqlite:///mlflow.db`` in the working directory. A cell's run is marked FINISHED only
after all its metrics and artifacts are logged; a failing cell is marked FAILED with the
error as the tag ``medbench.error`` and the traceback as the artifact ``error.txt``.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first runs are not serialised
    fcntl = None  # type: ignore[assignment]
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medbench.recording import layout

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000


def resolve_tracking_uri(cli_value: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    if cli_value:
        return cli_value
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def quiet_mlflow() -> None:
    """Keep MLflow's store migrations, emoji run links and download bars off a benchmark's stderr."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # "View run ... at: URL" lines on stdout would break `medbench run --json` against a server
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive lock on ``<database>.lock`` beside a local SQLite store; nothing for other stores."""
    if not tracking_uri.startswith("sqlite:///") or fcntl is None:
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Tracker:
    """Writes runs, params, tags, metrics and artifacts through ``MlflowClient``."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        # creating (migrating) a SQLite store and its experiment is not safe for two processes
        # at once: the second one's migration fails. Serialise that part with a file lock.
        with store_lock(tracking_uri):
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.experiment_id = self._experiment_id(experiment)
        self.experiment = experiment

    def _experiment_id(self, experiment: str) -> str:
        """The experiment's id, created (or restored) when needed.

        Two processes may create the same new experiment on a tracking server at once; the
        loser of that race reads the winner's experiment instead of failing.
        """
        from mlflow.exceptions import MlflowException

        existing = self.client.get_experiment_by_name(experiment)
        if existing is None:
            try:
                return str(self.client.create_experiment(experiment))
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                existing = self.client.get_experiment_by_name(experiment)
                if existing is None:
                    raise
        if existing.lifecycle_stage == "deleted":
            self.client.restore_experiment(existing.experiment_id)
        return str(existing.experiment_id)

    def start_run(
        self,
        name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        """Create a RUNNING run (nested under ``parent_run_id`` when given) and log its params."""
        from mlflow.entities import Param

        all_tags = {"mlflow.runName": name, **tags}
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(
            self.experiment_id, tags={k: str(v)[:MAX_TAG_LENGTH] for k, v in all_tags.items()}
        )
        run_id: str = run.info.run_id
        param_list = [Param(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(param_list), 100):
            self.client.log_batch(run_id, params=param_list[start : start + 100], tags=[], metrics=[])
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        entries = [Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
        for start in range(0, len(entries), 500):
            self.client.log_batch(run_id, metrics=entries[start : start + 500], params=[], tags=[])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(
            run_id, tags=[RunTag(k, str(v)[:MAX_TAG_LENGTH]) for k, v in tags.items()], metrics=[], params=[]
        )

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, file_name: str) -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / file_name
            path.write_text(text, encoding="utf-8")
            self.log_artifact(run_id, path)

    def finished_cells(self, keys: Iterable[str]) -> dict[str, Any]:
        """The newest FINISHED cell run of each of these ``medbench.cell_key`` values, by key."""
        wanted = set(keys)
        found: dict[str, Any] = {}
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{layout.TAG_ROLE}` = '{layout.ROLE_CELL}' and attributes.status = 'FINISHED'"
            ),
            max_results=50000,
            order_by=["attributes.start_time ASC"],
        )
        for run in runs:
            key = run.data.tags.get(layout.TAG_CELL_KEY)
            if key in wanted:
                found[key] = run
        return found

    def close_abandoned_runs(self, host: str, is_alive: Callable[[int], bool]) -> int:
        """Mark FAILED the RUNNING runs that a process of this host left behind when it died.

        Runs carry the writing process in the tags ``medbench.host`` and ``medbench.pid``;
        a run of a live process (a concurrent ``medbench run``) or of another host is left alone.

        Returns:
            How many runs were closed.
        """
        closed = 0
        runs = self.client.search_runs(
            [self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=50000
        )
        for run in runs:
            tags = run.data.tags
            pid = tags.get(layout.TAG_PID, "")
            if tags.get(layout.TAG_HOST) != host or not pid.isdigit() or is_alive(int(pid)):
                continue
            self.fail(run.info.run_id, f"abandoned: process {pid} on {host} ended while the run was RUNNING")
            closed += 1
        return closed

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run with ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(run_id, status=status)

    def fail(self, run_id: str, error: str, details: str | None = None) -> None:
        """Mark a run FAILED with the error message as a tag and the details as ``error.txt``."""
        try:
            self.set_tags(run_id, {layout.TAG_ERROR: error})
            if details:
                self.log_text(run_id, details, "error.txt")
        finally:
            self.finish(run_id, "FAILED")
