"""``--executor ray`` on a local Ray instance: the local executor's cells, and a killed worker is retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install ray")

MATRIX = [
    "--dataset", "phantom2d", "--model", "smallcnn", "--defense", "none,at-fgsm",
    "--attack", "pgd", "--eps", "2/255,8/255", "--n-eval", "24", "--epochs", "1",
    "--set", "dataset.phantom2d.n_samples=200", "--set", "dataset.phantom2d.image_size=16",
    "--set", "attack.pgd.max_iter=300", "--experiment", "ray",
]  # fmt: skip


def _cells(uri: str) -> list:  # type: ignore[type-arg]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("ray")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("medbench.role") == "cell"]


def _kill_one_worker_mid_cell(uri: str, killed: list[str], stop: threading.Event) -> None:
    """SIGKILL the worker process of the first cell seen RUNNING after another cell FINISHED."""
    while not stop.is_set():
        try:
            cells = _cells(uri)
        except Exception:  # the store is being created
            cells = []
        running = [r for r in cells if r.info.status == "RUNNING" and "medbench.worker" in r.data.tags]
        if running and any(r.info.status == "FINISHED" for r in cells):
            target = running[0]
            try:
                os.kill(int(target.data.tags["medbench.pid"]), signal.SIGKILL)
            except ProcessLookupError:
                continue
            # the cell may have finished between the read and the kill (a slow, shared machine):
            # then this kill hit no cell, and the next RUNNING one is the target
            if MlflowClient(tracking_uri=uri).get_run(target.info.run_id).info.status == "FINISHED":
                continue
            killed.append(target.data.tags["mlflow.runName"])
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_ray_matches_the_local_executor_and_retries_a_killed_worker(tmp_path: Path) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MEDBENCH_CACHE_DIR": str(tmp_path / "cache")}
    environment.pop("MEDBENCH_SHARE_CHECKPOINTS", None)
    command = [sys.executable, "-m", "medbench", "run", *MATRIX]
    local = f"sqlite:///{tmp_path / 'local.db'}"
    reference = subprocess.run(  # in tmp_path: the SQLite store's artifact root is ./mlruns
        [*command, "--tracking-uri", local], env=environment, capture_output=True, text=True, timeout=900,
        check=False, cwd=tmp_path,
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-3000:]

    uri = f"sqlite:///{tmp_path / 'ray.db'}"
    killed: list[str] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_worker_mid_cell, args=(uri, killed, stop), daemon=True)
    killer.start()
    try:
        result = subprocess.run(
            [*command, "--executor", "ray", "--tracking-uri", uri], env=environment, capture_output=True,
            text=True, timeout=1200, check=False, cwd=tmp_path,
        )  # fmt: skip
    finally:
        stop.set()
        killer.join(timeout=10)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ray: 2 group task(s)" in " ".join(result.stderr.split())
    cells = _cells(uri)
    finished = [r for r in cells if r.info.status == "FINISHED"]
    labels = [r.data.tags["mlflow.runName"] for r in finished]
    assert len(labels) == len(set(labels)) == 4, "every cell FINISHED exactly once"
    assert len({r.data.tags["mlflow.parentRunId"] for r in cells}) == 1
    assert killed, "a worker was killed in the middle of a cell"
    failed = [r for r in cells if r.info.status == "FAILED"]
    assert [r.data.tags["mlflow.runName"] for r in failed] == killed
    assert "abandoned" in failed[0].data.tags["medbench.error"]

    def metrics(runs: list) -> dict[str, dict[str, float]]:  # type: ignore[type-arg]
        return {
            r.data.tags["mlflow.runName"]: {k: v for k, v in r.data.metrics.items() if k != "seconds"}
            for r in runs
        }

    assert metrics(finished) == metrics(_cells(local)), "the same metrics as the local executor"
    shared = {path.parent.parent.name for path in (tmp_path / "mlruns").rglob("checkpoints/*/*/meta.json")}
    assert len(shared) == 2, "both models shared (cached by the local run: uploaded on first use)"
