"""The example third-party plugin: installed for real with pip, discovered, and run in a matrix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medbench.testing import check_attack, check_dataset, check_defense, check_model

EXAMPLE = Path(__file__).resolve().parents[3] / "plugins" / "examples" / "medbench-example"


@pytest.fixture(scope="module")
def example_modules() -> Iterator[None]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        yield
    finally:
        sys.path.remove(str(EXAMPLE))
        for name in [n for n in sys.modules if n.startswith("medbench_example")]:
            del sys.modules[name]


def test_example_parts_pass_the_contract_checks(example_modules: None) -> None:
    from medbench_example.median_smoothing import MedianSmoothing
    from medbench_example.sign_noise import SignNoise
    from medbench_example.stripes import Stripes
    from medbench_example.tinymlp import TinyMLP

    check_attack(SignNoise())
    check_dataset(Stripes())
    check_model(TinyMLP())
    check_defense(MedianSmoothing())


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-installs the example package into its own folder (the test environment stays clean)."""
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return target


def _medbench(args: list[str], site: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "COLUMNS": "200",
        "MEDBENCH_CACHE_DIR": str(tmp_path / "cache"),
    }
    return subprocess.run(
        [sys.executable, "-m", "medbench", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.slow
def test_installed_example_is_discovered(installed_example: Path, tmp_path: Path) -> None:
    result = _medbench(["plugins"], installed_example, tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "│ example" in line)
    assert "medbench-example" in line and "0.1.0" in line and "loaded" in line
    listing = _medbench(["list"], installed_example, tmp_path).stdout
    for name in ("sign-noise", "median-smoothing", "stripes", "tinymlp"):
        assert name in listing


@pytest.mark.slow
def test_matrix_with_all_four_example_parts(installed_example: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _medbench(
        [
            "run",
            "--dataset",
            "stripes",
            "--model",
            "tinymlp",
            "--defense",
            "none,median-smoothing",
            "--attack",
            "sign-noise,fgsm",
            "--eps",
            "8/255",
            "--epochs",
            "2",
            "--n-eval",
            "40",
            "--tracking-uri",
            uri,
            "--json",
        ],
        installed_example,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    cells = json.loads(result.stdout)["cells"]
    assert {(c["defense"], c["attack"]) for c in cells} == {
        ("none", "sign-noise"),
        ("none", "fgsm"),
        ("median-smoothing", "sign-noise"),
        ("median-smoothing", "fgsm"),
    }
    assert all(
        c["status"] == "FINISHED" and c["model"] == "tinymlp" and c["dataset"] == "stripes" for c in cells
    )
    for cell in cells:
        assert cell["metrics"]["linf_max"] <= 8 / 255 + 1e-6
