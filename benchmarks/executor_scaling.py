"""Wall time of one matrix under the local executor and under Ray with 1 and 2 workers.

Runs the same ``medbench run`` command (the smoke suite, reduced by default) with
``--executor local``, ``--executor ray --ray-cpus 1`` and ``--executor ray --ray-cpus 2``,
each into its own fresh SQLite store and with a shared, pre-warmed model cache (so that the
figure is about executing cells, not training), checks that the cells' metrics are
identical, and prints wall time, speedup over local and the overhead per cell
(``(wall − local wall / workers) / cells``).

    python benchmarks/executor_scaling.py [--tiny] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

REDUCED = [
    "--suite", "smoke", "--n-eval", "200", "--set", "dataset.phantom2d.n_samples=1500",
    "--defense", "none,at-fgsm,gaussian-augmentation,at-gn",
]  # fmt: skip
TINY = [
    "--suite", "smoke", "--n-eval", "16", "--epochs", "1", "--set", "dataset.phantom2d.n_samples=200",
    "--set", "dataset.phantom2d.image_size=16", "--defense", "none,at-fgsm", "--attack", "fgsm,gn",
]  # fmt: skip

CONFIGURATIONS = {
    "local": ["--executor", "local"],
    "ray-1": ["--executor", "ray", "--ray-cpus", "1"],
    "ray-2": ["--executor", "ray", "--ray-cpus", "2"],
}
WORKERS = {"local": 1, "ray-1": 1, "ray-2": 2}


def _run(matrix: list[str], extra: list[str], store: Path, environment: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "medbench", "run", *matrix, *extra, "--tracking-uri", f"sqlite:///{store}"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"medbench run {' '.join(extra)} failed:\n{completed.stderr[-3000:]}")
    return elapsed


def _metrics(store: Path) -> dict[str, dict[str, float]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    result = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], max_results=5000):
            if run.data.tags.get("medbench.role") == "cell" and run.info.status == "FINISHED":
                metrics = {k: v for k, v in run.data.metrics.items() if k != "seconds"}
                result[run.data.tags["mlflow.runName"]] = metrics
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a matrix of seconds (CI)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    matrix = TINY if args.tiny else REDUCED
    with tempfile.TemporaryDirectory(prefix="medbench-scaling-") as directory:
        root = Path(directory)
        environment = {**os.environ, "MEDBENCH_CACHE_DIR": str(root / "cache"), "OMP_NUM_THREADS": "1"}
        _run(matrix, ["--executor", "local"], root / "warm.db", environment)  # trains and caches the models
        walls: dict[str, float] = {}
        metrics: dict[str, dict[str, dict[str, float]]] = {}
        for name, extra in CONFIGURATIONS.items():
            walls[name] = _run(matrix, extra, root / f"{name}.db", environment)
            metrics[name] = _metrics(root / f"{name}.db")
        identical = all(metrics[name] == metrics["local"] for name in metrics)
        cells = len(metrics["local"])
    figures: dict[str, Any] = {"cells": cells, "identical_metrics": identical, "configurations": {}}
    print(f"{cells} cells; metrics identical across executors: {identical}")
    print(f"{'executor':<8} {'workers':>7} {'wall (s)':>9} {'speedup':>8} {'overhead/cell (s)':>18}")
    for name, wall in walls.items():
        workers = WORKERS[name]
        speedup = walls["local"] / wall
        overhead = (wall - walls["local"] / workers) / cells
        figures["configurations"][name] = {
            "workers": workers,
            "wall_seconds": wall,
            "speedup": speedup,
            "overhead_per_cell_seconds": overhead,
        }
        print(f"{name:<8} {workers:>7} {wall:>9.1f} {speedup:>8.2f} {overhead:>18.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not identical:
        raise SystemExit("the executors disagree on the metrics")


if __name__ == "__main__":
    main()
