"""Determinism, concurrent writers on one SQLite store, and internal errors at the top level."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medbench.cli import main

TINY = [
    "--dataset", "phantom2d", "--model", "smallcnn", "--defense", "none", "--attack", "fgsm,pgd,gn",
    "--eps", "2/255,8/255", "--n-eval", "16", "--epochs", "1", "--seed", "7", "--experiment", "smoke",
    "--set", "dataset.phantom2d.n_samples=200", "--set", "dataset.phantom2d.image_size=16",
]  # fmt: skip


def _metrics_by_label(uri: str, experiment: str = "smoke") -> dict[str, list[dict[str, float]]]:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    result: dict[str, list[dict[str, float]]] = {}
    for run in client.search_runs([found.experiment_id], max_results=1000):
        if run.data.tags.get("medbench.role") == "cell":
            assert run.info.status == "FINISHED"
            metrics = {k: v for k, v in run.data.metrics.items() if k != "seconds"}
            result.setdefault(run.data.tags["mlflow.runName"], []).append(metrics)
    return result


def test_the_same_command_twice_gives_identical_metrics_on_the_cpu(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for extra in ([], ["--rerun", "--no-cache"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["run", *TINY, "--tracking-uri", uri, "--device", "cpu", *extra])
        assert exit_info.value.code in (0, None)
    runs = _metrics_by_label(uri)
    assert len(runs) == 6
    for label, (first, second) in runs.items():
        assert first == second, (
            f"{label} differs between two identical runs (retrained, random starts, noise)"
        )


@pytest.mark.slow
def test_three_processes_share_a_fresh_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MEDBENCH_CACHE_DIR": str(tmp_path / "cache")}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medbench",
                "run",
                *TINY,
                "--experiment",
                f"writer-{number}",
                "--tracking-uri",
                uri,
            ],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(3)
    ]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    for number in range(3):
        assert len(_metrics_by_label(uri, f"writer-{number}")) == 6, "every writer recorded all its cells"


def test_an_internal_error_is_one_line_unless_debugging(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medbench.engine import planning

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the store went away\nsecond line")

    monkeypatch.setattr(planning, "plan_matrix", broken)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *TINY])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.strip() == (
        "medbench: internal error: RuntimeError: the store went away (set MEDBENCH_DEBUG=1 for the traceback)"
    )
    monkeypatch.setenv("MEDBENCH_DEBUG", "1")
    with pytest.raises(RuntimeError, match="the store went away"):
        main(["run", *TINY])
