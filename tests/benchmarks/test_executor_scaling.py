"""The executor-scaling benchmark still runs (`--tiny`, as a subprocess, on a local Ray instance).

No timing is asserted (the figures in RESULTS.md come from the script's output): the test
checks that the three executors ran, recorded the same metrics (the script exits non-zero
otherwise), and the structure of the JSON.
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
def test_the_executor_scaling_benchmark_runs_in_its_tiny_configuration(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the Ray executor needs `pip install -e '.[ray]'`")
    output = tmp_path / "scaling.json"
    env = os.environ | {"OMP_NUM_THREADS": "1", "MEDBENCH_CACHE_DIR": str(tmp_path / "cache")}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "executor_scaling.py"), "--tiny", "--json", str(output)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "metrics identical across executors: True" in completed.stdout
    document = json.loads(output.read_text())
    assert document["identical_metrics"] is True and document["cells"] > 0
    assert set(document["configurations"]) == {"local", "ray-1", "ray-2"}
    for name, row in document["configurations"].items():
        assert math.isfinite(row["wall_seconds"]) and row["wall_seconds"] > 0, name
        assert row["workers"] == (2 if name == "ray-2" else 1)
