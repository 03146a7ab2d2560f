"""``benchmarks/matrix_scaling.py --tiny --device cpu`` still runs: its tables, fits and JSON.

No timing is asserted (the figures come from the script, not from tests): only that every sweep
ran real matrices with the right number of cells and that the fitted exponents are finite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "matrix_scaling.py"
TIMEOUT_S = 180
SWEEPS = {"cells": "cells", "samples": "n_eval", "pixels": "image_size**2"}
PLUGIN_ENV = {"MEDBENCH_PLUGINS_ALLOW", "MEDBENCH_DISABLE_PLUGINS", "MEDBENCH_DISABLE_PLUGIN_AUTOLOAD"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    directory = tmp_path_factory.mktemp("matrix-scaling")
    env = {key: value for key, value in os.environ.items() if key not in PLUGIN_ENV | {"MLFLOW_TRACKING_URI"}}
    env.update({"OMP_NUM_THREADS": "1", "MEDBENCH_CACHE_DIR": str(directory / "unused-cache")})
    path = directory / "scaling.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--json", str(path)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    payload = json.loads(path.read_text()) if path.exists() else {}
    return completed, payload


def test_prints_a_table_and_the_fits_per_sweep(
    tiny: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    completed, _ = tiny
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    assert "fixed configuration: medbench run --suite smoke --model smallcnn" in out
    for name in SWEEPS:
        assert f"sweep {name}: x = " in out, name
        for kind in ("wall", "attack"):
            assert f"fitted exponent ({kind}): time ~ {name}^" in out, (name, kind)
    assert out.count("R² ") == 2 * len(SWEEPS)


def test_json_has_the_points_and_finite_exponents(
    tiny: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, payload = tiny
    config = payload["config"]
    assert config["tiny"] is True and config["device"] == "cpu" and config["repeats"] == 1
    assert set(payload["sweeps"]) == set(SWEEPS)
    for name, x in SWEEPS.items():
        sweep = payload["sweeps"][name]
        assert sweep["x"] == x
        points = sweep["points"]
        assert len(points) >= 2
        for point in points:
            assert len(point["wall_s"]) == len(point["attack_s"]) == 1
            assert point["wall_median_s"] >= point["attack_median_s"] > 0
            assert point["wall_per_unit_s"] == pytest.approx(point["wall_median_s"] / point["x"])
        if name == "pixels":
            assert [p["x"] for p in points] == [p["image_size"] ** 2 for p in points]
        else:  # the other two factors stay at the fixed configuration
            fixed = config["fixed"]
            assert all(p[key] == fixed[key] for p in points for key in sweep["fixed"])
        for kind in ("wall", "attack"):
            fit = sweep["fit"][kind]
            assert math.isfinite(fit["exponent"]) and math.isfinite(fit["coefficient"]), (name, kind, fit)
            assert fit["r2"] is None or fit["r2"] <= 1.0
