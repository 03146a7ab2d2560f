"""The default `medbench run` (smoke suite) end to end, and the attack-strength sanity relations."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def smoke_cells(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:  # type: ignore[type-arg]
    workdir = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "MEDBENCH_CACHE_DIR": str(workdir / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-m", "medbench", "run", "--json"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert (workdir / "mlflow.db").is_file(), (
        "the default store is sqlite:///mlflow.db in the working directory"
    )
    return json.loads(result.stdout)["cells"]


def _metric(cells: list[dict], defense: str, attack: str, eps: float, name: str) -> float:  # type: ignore[type-arg]
    (cell,) = [
        c
        for c in cells
        if c["defense"] == defense and c["attack"] == attack and abs(c["budget"] - eps) < 1e-9
    ]
    return float(cell["metrics"][name])


@pytest.mark.slow
def test_smoke_suite_runs_every_cell(smoke_cells: list[dict]) -> None:  # type: ignore[type-arg]
    assert len(smoke_cells) == 2 * 3 * 2
    assert all(cell["status"] == "FINISHED" for cell in smoke_cells)
    clean = _metric(smoke_cells, "none", "fgsm", 2 / 255, "clean_accuracy")
    assert 0.75 <= clean <= 0.98, f"phantom2d + smallcnn should be neither trivial nor hopeless, got {clean}"


@pytest.mark.slow
@pytest.mark.parametrize("defense", ["none", "at-pgd"])
@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_attack_strength_relations(smoke_cells: list[dict], defense: str, eps: float) -> None:  # type: ignore[type-arg]
    clean = _metric(smoke_cells, defense, "fgsm", eps, "clean_accuracy")
    fgsm = _metric(smoke_cells, defense, "fgsm", eps, "robust_accuracy")
    pgd = _metric(smoke_cells, defense, "pgd", eps, "robust_accuracy")
    assert pgd <= fgsm, "PGD (10 steps) must never be weaker than FGSM on the same model and samples"
    assert fgsm <= clean and pgd <= clean, "a gradient attack cannot raise accuracy"
    for attack in ("fgsm", "pgd"):
        assert _metric(smoke_cells, defense, attack, eps, "linf_max") <= eps + 1e-6
