"""The executor-scaling benchmark still runs (`--tiny`, as a subprocess, on a local Ray instance).

No timing is asserted (the figures in RESULTS.md come from the script's output): the test
checks that the three executors ran, recorded the same metrics (the script exits non-zero
otherwise), and the structure of the JSON.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from benchmark_runner import run_script


@pytest.mark.slow
def test_the_executor_scaling_benchmark_runs_in_its_tiny_configuration(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the Ray executor needs `pip install -e '.[ray]'`")
    run = run_script("executor_scaling.py", "--tiny", directory=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "metrics identical across executors: True" in run.stdout
    document = run.payload
    assert document["identical_metrics"] is True and document["cells"] > 0
    assert set(document["configurations"]) == {"local", "ray-1", "ray-2"}
    for name, row in document["configurations"].items():
        assert math.isfinite(row["wall_seconds"]) and row["wall_seconds"] > 0, name
        assert row["workers"] == (2 if name == "ray-2" else 1)
