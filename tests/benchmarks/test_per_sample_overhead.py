"""The per-sample overhead benchmark still runs (`--tiny`, as a subprocess).

No timing is asserted (the figure is in RESULTS.md): the test checks that it runs and the
structure of its JSON.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmark_runner import run_script


def test_the_per_sample_overhead_benchmark_runs_in_its_tiny_configuration(tmp_path: Path) -> None:
    run = run_script("per_sample_overhead.py", "--tiny", directory=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for attack in ("pgd", "fgsm"):
        figures = run.payload[attack]
        assert figures["cell_seconds"] > 0 and figures["per_sample_seconds"] > 0
        assert math.isfinite(figures["share_of_cell"]) and figures["npz_bytes"] > 0
