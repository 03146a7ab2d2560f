"""The new attacks through ``medbench run``: what the harness logs to MLflow for them.

A small matrix on phantom2d with smallcnn (trained once for the module: 16×16 images and a
higher learning rate, so that 6 epochs reach ~90% accuracy) runs cw-l2 and square; two more
runs attack the same cached model with pgd, autoattack and hsj, and with a bounded cw-l2. The
tests read the cells back with ``MlflowClient``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from medbench.cli import main

SPEC = """
dataset: phantom2d
models: [smallcnn]
defenses: [none]
attacks: [cw-l2, square]
budgets: {eps: [8/255]}
n_eval: 24
seed: 0
training: {epochs: 6, batch_size: 32, lr: 0.01}
settings:
  dataset:
    phantom2d: {image_size: 16, n_samples: 400}
  attack:
    autoattack: {square_queries: 200}
    square: {max_iter: 100}
    hsj: {max_iter: 5, max_eval: 200}
"""
SQUARE_ITERATIONS = 100


def _run(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)


def _cells(uri: str, experiment: str = "strong") -> dict[str, Any]:
    """The cell runs of one experiment, by attack name; each must have finished."""
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    cells: dict[str, Any] = {}
    for run in client.search_runs([found.experiment_id]):
        if run.data.tags.get("medbench.role") == "cell":
            assert run.info.status == "FINISHED", run.data.tags.get("medbench.error")
            cells[run.data.params["attack"]] = run
    return cells


def _more(store: tuple[Path, str], experiment: str, *args: str) -> dict[str, Any]:
    """Run the module's matrix again with other attacks on the cached model; its cells by attack."""
    folder, uri = store
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDBENCH_CACHE_DIR", str(folder / "cache"))
        _run(
            [
                "run",
                "--spec",
                str(folder / "spec.yaml"),
                *args,
                "--tracking-uri",
                uri,
                "--experiment",
                experiment,
            ]
        )
    return _cells(uri, experiment)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Runs the matrix once; returns the spec's folder (which holds the model cache) and the store URI."""
    folder = tmp_path_factory.mktemp("strong-cli")
    (folder / "spec.yaml").write_text(SPEC, encoding="utf-8")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDBENCH_CACHE_DIR", str(folder / "cache"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        _run(["run", "--spec", str(folder / "spec.yaml"), "--tracking-uri", uri, "--experiment", "strong"])
    return folder, uri


def test_cw_l2_logs_its_achieved_l2_and_its_threat_model(store: tuple[Path, str]) -> None:
    cell = _cells(store[1])["cw-l2"]
    assert cell.data.params["threat_model"] == "l2-minimal"
    assert cell.data.params["budget_name"] == "confidence" and float(cell.data.params["budget"]) == 0.0
    l2_mean = cell.data.metrics["l2_mean"]
    assert math.isfinite(l2_mean) and l2_mean > 0
    # unbounded: (nearly) every correctly classified sample is broken
    assert cell.data.metrics["robust_accuracy"] < cell.data.metrics["clean_accuracy"] / 4


def test_cw_l2_max_norm_bounds_the_logged_l2(store: tuple[Path, str]) -> None:
    unbounded = _cells(store[1])["cw-l2"].data.metrics
    max_norm = unbounded["l2_mean"] / 2
    bounded = _more(store, "bounded", "--attack", "cw-l2", "--set", f"attack.cw-l2.max_norm={max_norm}")[
        "cw-l2"
    ]
    assert float(bounded.data.params["attack.max_norm"]) == pytest.approx(max_norm)
    assert bounded.data.metrics["l2_mean"] <= max_norm + 1e-5
    assert bounded.data.metrics["robust_accuracy"] > unbounded["robust_accuracy"]


def test_square_logs_queries_consistent_with_its_settings(store: tuple[Path, str]) -> None:
    cell = _cells(store[1])["square"]
    assert int(cell.data.params["attack.max_iter"]) == SQUARE_ITERATIONS
    queries = cell.data.metrics["queries_mean"]
    # at least one scoring per sample; at most 3 per sample and iteration (+1 before them)
    assert 1 <= queries <= 3 * (SQUARE_ITERATIONS + 1)
    assert cell.data.metrics["linf_max"] <= 8 / 255 + 1e-6


def test_autoattack_and_hsj_on_the_trained_model(store: tuple[Path, str]) -> None:
    cells = _more(store, "ensemble", "--attack", "pgd,autoattack,hsj")
    pgd, autoattack = cells["pgd"].data.metrics, cells["autoattack"].data.metrics
    assert autoattack["clean_accuracy"] == pgd["clean_accuracy"] > 0.7  # a trained model, the same samples
    assert autoattack["robust_accuracy"] <= pgd["robust_accuracy"]
    assert autoattack["linf_max"] <= 8 / 255 + 1e-6
    assert cells["autoattack"].data.params["attack.version"] == "standard"
    hsj = cells["hsj"]
    assert hsj.data.params["threat_model"] == "linf"
    assert hsj.data.metrics["queries_mean"] > 1 and hsj.data.metrics["linf_max"] <= 8 / 255 + 1e-6
