"""The FGSM budget-sweep benchmark still runs (`--tiny --device cpu`, as a subprocess).

No timing is asserted (performance claims come from the script's output in RESULTS.md): the
test checks that it runs, that its shared and separate sweeps agreed (it exits non-zero
otherwise), and the structure of its JSON.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from benchmark_runner import run_script


@pytest.mark.slow
def test_the_budget_sweep_benchmark_runs_in_its_tiny_configuration(tmp_path: Path) -> None:
    run = run_script("budget_sweep.py", "--tiny", directory=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "speedup of the shared gradient" in run.stdout
    attack, matrix = run.payload["attack"], run.payload["matrix"]
    assert set(attack["median_s"]) == {
        "shared craft",
        "separate craft",
        "shared craft+predict",
        "separate craft+predict",
    }
    assert all(math.isfinite(value) and value > 0 for value in attack["median_s"].values())
    assert len(matrix["shared_s"]) == len(matrix["separate_s"]) == 1
    assert math.isfinite(matrix["speedup"]) and matrix["speedup"] > 0
