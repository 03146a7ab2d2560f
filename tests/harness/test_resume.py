"""Resuming matrices: finished cells are kept, abandoned runs closed, a SIGKILLed matrix completes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from medbench.cli import main

TINY = [
    "--dataset", "phantom2d", "--model", "smallcnn", "--defense", "none", "--attack", "fgsm,gn",
    "--eps", "2/255,8/255", "--n-eval", "16", "--epochs", "1", "--experiment", "smoke",
    "--set", "dataset.phantom2d.n_samples=200", "--set", "dataset.phantom2d.image_size=16",
]  # fmt: skip


def _run(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *args])
    assert exit_info.value.code in (0, None)


def _cells(uri: str, experiment: str = "smoke") -> list[Any]:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("medbench.role") == "cell"]


def test_a_second_run_keeps_finished_cells_and_rerun_repeats_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _run([*TINY, "--tracking-uri", uri])
    first = {r.data.tags["medbench.cell_key"]: r for r in _cells(uri)}
    assert len(first) == 4
    capsys.readouterr()

    _run([*TINY, "--tracking-uri", uri, "--json"])
    captured = capsys.readouterr()
    assert "4 of 4 cells already FINISHED in the store" in " ".join(captured.err.split())
    assert len(_cells(uri)) == 4, "nothing ran again"
    import json

    document = json.loads(captured.out)
    assert {c["run_id"] for c in document["cells"]} == {r.info.run_id for r in first.values()}

    _run([*TINY, "--attack", "fgsm,gn,pgd", "--tracking-uri", uri])
    assert len(_cells(uri)) == 6, "only the two new pgd cells ran"

    _run([*TINY, "--tracking-uri", uri, "--rerun"])
    assert len(_cells(uri)) == 10
    finished = [r for r in _cells(uri) if r.info.status == "FINISHED"]
    assert len(finished) == 10


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_runs_left_running_by_a_dead_process_are_closed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("smoke")
    here = socket.gethostname()
    dead = client.create_run(
        experiment, tags={"medbench.role": "cell", "medbench.host": here, "medbench.pid": str(_dead_pid())}
    )
    alive = client.create_run(
        experiment, tags={"medbench.role": "cell", "medbench.host": here, "medbench.pid": str(os.getpid())}
    )
    elsewhere = client.create_run(
        experiment, tags={"medbench.role": "cell", "medbench.host": "other-host", "medbench.pid": "1"}
    )
    _run([*TINY, "--attack", "gn", "--eps", "2/255", "--tracking-uri", uri])
    closed = client.get_run(dead.info.run_id)
    assert closed.info.status == "FAILED" and "abandoned" in closed.data.tags["medbench.error"]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING", "a live process's run is left alone"
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING", "another host's run is left alone"


SLOW_SPEC = """
name: fault
dataset: phantom2d
models: [smallcnn]
defenses: [none]
attacks: [pgd, fgsm]
budgets: {eps: [2/255, 4/255, 8/255]}
n_eval: 40
seed: 3
training: {epochs: 2, batch_size: 32, lr: 0.01}
settings:
  dataset:
    phantom2d: {image_size: 16, n_samples: 300}
  attack:
    pgd: {max_iter: 300}
"""


def _metrics(uri: str) -> dict[str, dict[str, float]]:
    """Metrics of the FINISHED cells by label (all but wall time); each label exactly once."""
    result: dict[str, dict[str, float]] = {}
    for run in _cells(uri, "fault"):
        if run.info.status != "FINISHED":
            continue
        label = run.data.tags["mlflow.runName"]
        assert label not in result, f"{label} FINISHED twice"
        result[label] = {k: v for k, v in run.data.metrics.items() if k != "seconds"}
    return result


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_cell_then_resume(tmp_path: Path) -> None:
    spec = tmp_path / "fault.yaml"
    spec.write_text(SLOW_SPEC)
    environment = {**os.environ, "MEDBENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    interrupted = f"sqlite:///{tmp_path / 'interrupted.db'}"
    command = [sys.executable, "-m", "medbench", "run", "--spec", str(spec)]

    process = subprocess.Popen(
        [*command, "--tracking-uri", interrupted],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = MlflowClient(tracking_uri=interrupted)
    deadline = time.monotonic() + 300
    killed_in: str | None = None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            experiment = client.get_experiment_by_name("fault")
            if experiment is not None:
                runs = client.search_runs([experiment.experiment_id])
                cells = [r for r in runs if r.data.tags.get("medbench.role") == "cell"]
                running = [r for r in cells if r.info.status == "RUNNING"]
                if any(r.info.status == "FINISHED" for r in cells) and running:
                    killed_in = running[0].data.tags["mlflow.runName"]
                    os.killpg(process.pid, signal.SIGKILL)
                    break
            time.sleep(0.05)
    finally:
        if process.poll() is None and killed_in is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert killed_in is not None, "the matrix never had a cell running after a finished one"
    before = _metrics(interrupted)
    assert 0 < len(before) < 6 and killed_in not in before

    resumed = subprocess.run(
        [*command, "--tracking-uri", interrupted],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "marked 2 run(s) FAILED" in " ".join(resumed.stderr.split()), "the cell and the parent run"
    after = _metrics(interrupted)
    assert len(after) == 6
    for label, metrics in before.items():
        assert after[label] == metrics, "cells finished before the kill were kept, not rerun"
    runs = _cells(interrupted, "fault")
    abandoned = [r for r in runs if r.info.status == "FAILED"]
    assert [r.data.tags["mlflow.runName"] for r in abandoned] == [killed_in]
    assert not [r for r in runs if r.info.status == "RUNNING"]

    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    clean = subprocess.run(
        [*command, "--tracking-uri", reference], env=environment, capture_output=True, text=True, timeout=600
    )
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert after == _metrics(reference), "the resumed matrix equals an uninterrupted one"
