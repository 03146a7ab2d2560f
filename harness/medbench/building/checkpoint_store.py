"""Trained checkpoints shared through the MLflow artifact store (the devices and Ray executors).

Each defended model (and ``--surrogate``) is trained by one process, but the workers of a
matrix may run on other nodes with their own model cache: a Ray task retried elsewhere, the
coordinator's final pass, a later ``medbench run`` of the same experiment on a fresh node. So
the process that trains a model also uploads its cache entry to the experiment's
**checkpoints run** (tag ``medbench.role = checkpoints``, status FINISHED, no metrics), at::

    checkpoints/<cache key>/<sha256 of the weights>/model.pt
    checkpoints/<cache key>/<sha256 of the weights>/meta.json   (the cache's JSON, with "sha256")

and a process whose local cache misses looks there before training (a process whose local
cache hits uploads the entry when the store lacks it). The download is checked
against the recorded SHA-256 (and the folder's name); a mismatch raises
:class:`CheckpointIntegrityError` instead of using the file. ``meta.json`` is uploaded after the
weights, so a version without it is incomplete (being uploaded) and is ignored. A key with a
complete version is not uploaded again; two processes that trained the same model at once may
each leave their version (different hashes, different folders, nothing overwritten), and
readers take the first by name.

One run per experiment rather than the matrix's parent run: the checkpoints outlive one
``medbench run`` (a resumed or extended matrix finds them), the parent runs' artifacts stay
the results, and a reader needs one search, not one per parent run. Two processes creating the
run at the same moment on a server may leave two; readers look in all, writers use the oldest.

Sharing is on in the processes of ``--executor devices`` and ``--executor ray`` and off for
``--executor local``; ``MEDBENCH_SHARE_CHECKPOINTS=1`` or ``=0`` turns it on or off everywhere.
``--no-cache`` bypasses it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medbench import __version__
from medbench.building.cache import META_FILE, WEIGHTS_FILE, ModelCache, file_sha256
from medbench.errors import MedbenchError, first_line
from medbench.recording.tracking import store_lock

if TYPE_CHECKING:
    from medbench.recording.tracking import Tracker

SHARE_ENV = "MEDBENCH_SHARE_CHECKPOINTS"
"""``1``: share trained checkpoints through the artifact store also with ``--executor local``;
``0``: never (not even for the devices and Ray executors)."""
ROLE = "checkpoints"
"""The ``medbench.role`` tag of an experiment's checkpoints run."""
ARTIFACT_DIR = "checkpoints"
RUN_NAME = "medbench-checkpoints"


class CheckpointIntegrityError(MedbenchError):
    """A shared checkpoint whose bytes do not match the SHA-256 recorded with it."""


def sharing_wanted(distributed: bool) -> bool:
    """``$MEDBENCH_SHARE_CHECKPOINTS`` when set, else whether the run is spread over processes."""
    value = os.environ.get(SHARE_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return distributed


class CheckpointStore:
    """The checkpoints run of one experiment, as the ``remote`` of a :class:`ModelCache`."""

    def __init__(self, tracker: Tracker, notify: Callable[[str], None] | None = None) -> None:
        self.tracker = tracker
        self.client = tracker.client
        self.notify = notify or (lambda message: None)
        self.fetched: list[str] = []
        """Keys installed from the store by this process."""
        self.uploaded: list[str] = []
        """Keys uploaded by this process."""

    # ------------------------------------------------------------------ runs

    def run_ids(self) -> list[str]:
        """The experiment's checkpoints runs, oldest first (normally one, or none yet)."""
        runs = self.client.search_runs(
            [self.tracker.experiment_id],
            filter_string=f"tags.`medbench.role` = '{ROLE}'",
            max_results=100,
            order_by=["attributes.start_time ASC"],
        )
        ordered = sorted(runs, key=lambda run: (run.info.start_time or 0, run.info.run_id))
        return [run.info.run_id for run in ordered]

    def target_run_id(self) -> str:
        """The run to upload to: the oldest checkpoints run, created when there is none."""
        existing = self.run_ids()
        if existing:
            return existing[0]
        with store_lock(self.tracker.tracking_uri):  # one creator at a time on a local SQLite store
            existing = self.run_ids()
            if existing:
                return existing[0]
            run_id = self.tracker.start_run(
                RUN_NAME,
                params={},
                tags={"medbench.role": ROLE, "medbench.version": __version__},
            )
            self.tracker.finish(run_id)  # never RUNNING: nothing can take it for an abandoned run
            return run_id

    # ------------------------------------------------------------------ reading

    def versions(self, key: str) -> list[tuple[str, str]]:
        """``(run id, artifact folder)`` of every complete version of ``key``, in reading order."""
        found = []
        for run_id in self.run_ids():
            for folder in sorted(self._entries(run_id, f"{ARTIFACT_DIR}/{key}"), key=lambda f: f.path):
                if not folder.is_dir:
                    continue
                names = {Path(f.path).name for f in self._entries(run_id, folder.path)}
                if {WEIGHTS_FILE, META_FILE} <= names:
                    found.append((run_id, folder.path))
        return found

    def has(self, key: str) -> bool:
        """Whether the store holds a complete version of ``key`` (True when it cannot be searched)."""
        try:
            return bool(self.versions(key))
        except Exception as error:
            self.notify(f"checkpoint {key}: artifact store not searched ({first_line(error)})")
            return True

    def _entries(self, run_id: str, path: str) -> list[Any]:
        try:
            return list(self.client.list_artifacts(run_id, path))
        except Exception:  # a folder that does not exist: some artifact stores raise instead of []
            return []

    def fetch(self, key: str, cache: ModelCache) -> bool:
        """Download the shared checkpoint of ``key``, check its hash and install it in ``cache``.

        Returns False when the store has none (or cannot be reached: the model is trained).

        Raises:
            CheckpointIntegrityError: the downloaded weights do not match their recorded SHA-256
                (twice: a download that races a concurrent identical upload is tried again).
        """
        try:
            versions = self.versions(key)
        except Exception as error:  # the store is unreachable: train rather than fail
            self.notify(f"checkpoint {key}: artifact store not searched ({first_line(error)}); training it")
            return False
        if not versions:
            return False
        run_id, folder = versions[0]
        cache.root.mkdir(parents=True, exist_ok=True)
        for attempt in (1, 2):
            with tempfile.TemporaryDirectory(dir=cache.root, suffix=".tmp") as directory:
                try:
                    weights, meta = self._download(run_id, folder, Path(directory))
                except Exception as error:
                    self.notify(f"checkpoint {key}: download failed ({first_line(error)}); training it here")
                    return False
                recorded = meta.get("sha256")
                actual = file_sha256(weights)
                expected_name = folder.rsplit("/", 1)[-1]
                if recorded == actual == expected_name:
                    origin = {"run_id": run_id, "artifact_path": f"{folder}/{WEIGHTS_FILE}"}
                    cache.install(key, weights, {**meta, "downloaded_from": origin})
                    self.fetched.append(key)
                    self.notify(f"checkpoint {key}: downloaded from the artifact store (run {run_id})")
                    return True
                if attempt == 2:
                    raise CheckpointIntegrityError(
                        f"shared checkpoint {key} is corrupt: artifact {folder}/{WEIGHTS_FILE} of run "
                        f"{run_id} has SHA-256 {actual}, but {META_FILE} records {recorded} (and the "
                        f"folder {expected_name}); delete that folder from the artifact store (or run "
                        "with MEDBENCH_SHARE_CHECKPOINTS=0 or --no-cache) to train the model again"
                    )
        return False  # not reached

    def _download(self, run_id: str, folder: str, directory: Path) -> tuple[Path, dict[str, Any]]:
        meta_path = Path(self.client.download_artifacts(run_id, f"{folder}/{META_FILE}", str(directory)))
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"{folder}/{META_FILE} is not a JSON object")
        weights = Path(self.client.download_artifacts(run_id, f"{folder}/{WEIGHTS_FILE}", str(directory)))
        if not weights.resolve().is_relative_to(directory.resolve()):
            # a local artifact repository may hand back its own file: never move that one
            copied = directory / f"copy-{WEIGHTS_FILE}"
            shutil.copyfile(weights, copied)
            weights = copied
        return weights, meta

    # ------------------------------------------------------------------ writing

    def upload(self, key: str, weights: Path, meta: Path) -> None:
        """Share a newly trained checkpoint unless the store already holds a version of ``key``.

        ``weights`` and ``meta`` are named ``model.pt`` and ``meta.json`` (the artifacts' names).

        The weights go first and ``meta.json`` last: readers ignore a folder without it. An
        upload that fails is reported and skipped (the model stays in the local cache).
        """
        try:
            if self.versions(key):
                return
            digest = json.loads(meta.read_text(encoding="utf-8"))["sha256"]
            folder = f"{ARTIFACT_DIR}/{key}/{digest}"
            run_id = self.target_run_id()
            self.client.log_artifact(run_id, str(weights), folder)
            self.client.log_artifact(run_id, str(meta), folder)
        except Exception as error:
            self.notify(f"checkpoint {key}: upload to the artifact store failed ({first_line(error)})")
            return
        self.uploaded.append(key)
        self.notify(f"checkpoint {key}: uploaded to the artifact store (run {run_id})")
