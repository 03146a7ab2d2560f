"""The FGSM budget-sweep benchmark still runs (`--tiny --device cpu`, as a subprocess).

No timing is asserted (performance claims come from the script's output in RESULTS.md): the
test checks that it runs, that its shared and separate sweeps agreed (it exits non-zero
otherwise), and the structure of its JSON.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_budget_sweep_benchmark_runs_in_its_tiny_configuration(tmp_path: Path) -> None:
    output = tmp_path / "sweep.json"
    env = os.environ | {"OMP_NUM_THREADS": "1", "MEDBENCH_CACHE_DIR": str(tmp_path / "cache")}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "budget_sweep.py"), "--tiny", "--json", str(output)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "speedup of the shared gradient" in completed.stdout
    document = json.loads(output.read_text())
    attack, matrix = document["attack"], document["matrix"]
    assert set(attack["median_s"]) == {
        "shared craft",
        "separate craft",
        "shared craft+predict",
        "separate craft+predict",
    }
    assert all(math.isfinite(value) and value > 0 for value in attack["median_s"].values())
    assert len(matrix["shared_s"]) == len(matrix["separate_s"]) == 1
    assert math.isfinite(matrix["speedup"]) and matrix["speedup"] > 0
