"""``benchmarks/matrix_scaling.py --tiny --device cpu`` still runs: its tables, fits and JSON.

No timing is asserted (the figures come from the script, not from tests): only that every sweep
ran real matrices with the right number of cells and that the fitted exponents are finite.
"""

from __future__ import annotations

import math

import pytest
from benchmark_runner import ScriptRun, run_script

TIMEOUT_S = 180
SWEEPS = {"cells": "cells", "samples": "n_eval", "pixels": "image_size**2"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> ScriptRun:
    directory = tmp_path_factory.mktemp("matrix-scaling")
    arguments = ("--tiny", "--device", "cpu")
    return run_script("matrix_scaling.py", *arguments, directory=directory, timeout=TIMEOUT_S)


def test_prints_a_table_and_the_fits_per_sweep(
    tiny: ScriptRun,
) -> None:
    assert tiny.returncode == 0, tiny.stderr[-3000:]
    out = tiny.stdout
    assert "fixed configuration: medbench run --suite smoke --model smallcnn" in out
    for name in SWEEPS:
        assert f"sweep {name}: x = " in out, name
        for kind in ("wall", "attack"):
            assert f"fitted exponent ({kind}): time ~ {name}^" in out, (name, kind)
    assert out.count("R² ") == 2 * len(SWEEPS)


def test_json_has_the_points_and_finite_exponents(
    tiny: ScriptRun,
) -> None:
    payload = tiny.payload
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
