"""``--executor devices``: one worker process per device, defended models dealt out, one parent run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medbench.engine.executors import worker_arguments

MATRIX = [
    "--dataset", "phantom2d", "--model", "smallcnn", "--defense", "none,at-fgsm,gaussian-augmentation",
    "--attack", "fgsm,gn", "--eps", "2/255,8/255", "--n-eval", "16", "--epochs", "1",
    "--set", "dataset.phantom2d.n_samples=200", "--set", "dataset.phantom2d.image_size=16",
]  # fmt: skip


def test_worker_arguments_retarget_the_users_command() -> None:
    argv = [
        "--suite",
        "smoke",
        "--executor",
        "devices",
        "--devices=cuda:0,cuda:1",
        "--device",
        "auto",
        "--json",
    ]
    argv += ["--tracking-uri", "sqlite:///x.db", "--rerun"]
    assert worker_arguments(
        argv, device="cuda:1", shard=(1, 2), parent_run_id="p", tracking_uri="http://server", experiment="e"
    ) == [
        "--suite", "smoke", "--rerun", "--device", "cuda:1", "--shard", "1/2", "--parent-run-id", "p",
        "--tracking-uri", "http://server", "--experiment", "e",
    ]  # fmt: skip


def _cells(uri: str) -> list:  # type: ignore[type-arg]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("devices")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("medbench.role") == "cell"]


@pytest.mark.slow
def test_two_cpu_workers_deal_out_the_defended_models(tmp_path: Path) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MEDBENCH_CACHE_DIR": str(tmp_path / "cache")}
    environment.pop("MEDBENCH_SHARE_CHECKPOINTS", None)
    command = [sys.executable, "-m", "medbench", "run", *MATRIX, "--experiment", "devices"]
    shared = f"sqlite:///{tmp_path / 'devices.db'}"
    result = subprocess.run(  # in tmp_path: the SQLite store's artifact root is ./mlruns
        [*command, "--executor", "devices", "--devices", "cpu,cpu", "--tracking-uri", shared],
        env=environment, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "worker 1/2 on cpu" in result.stderr and "worker 2/2 on cpu" in result.stderr
    cells = _cells(shared)
    assert len(cells) == 12 and all(r.info.status == "FINISHED" for r in cells), "each cell once"
    assert len({r.data.tags["mlflow.parentRunId"] for r in cells}) == 1, "one parent run"
    workers: dict[str, set[str]] = {}
    for run in cells:
        workers.setdefault(run.data.params["defense"], set()).add(run.data.tags["medbench.worker"])
    assert workers == {"none": {"1/2"}, "at-fgsm": {"2/2"}, "gaussian-augmentation": {"1/2"}}, (
        "groups dealt round-robin, each defended model trained by one worker"
    )
    shared_models = {
        json.loads(path.read_text())["chain"][0]["name"]: path.parent.name
        for path in (tmp_path / "mlruns").rglob("checkpoints/*/*/meta.json")
    }
    assert shared_models.keys() == {"none", "at-fgsm", "gaussian-augmentation"}, (
        "each trained model uploaded to the artifact store for workers on other nodes"
    )
    for name, digest in shared_models.items():
        local = next(
            p for p in (tmp_path / "cache" / "models").glob("*.json")
            if json.loads(p.read_text())["chain"][0]["name"] == name
        )  # fmt: skip
        assert json.loads(local.read_text())["sha256"] == digest, "the folder is named by the weights' hash"

    local = f"sqlite:///{tmp_path / 'local.db'}"
    reference = subprocess.run(
        [*command, "--tracking-uri", local], env=environment, capture_output=True, text=True, timeout=900,
        check=False, cwd=tmp_path,
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-3000:]

    def metrics(runs: list) -> dict[str, dict[str, float]]:  # type: ignore[type-arg]
        return {
            r.data.tags["mlflow.runName"]: {k: v for k, v in r.data.metrics.items() if k != "seconds"}
            for r in runs
        }

    assert metrics(cells) == metrics(_cells(local)), "the same cells and metrics as the local executor"
    assert {r.data.tags["medbench.cell_key"] for r in cells} == {
        r.data.tags["medbench.cell_key"] for r in _cells(local)
    }
