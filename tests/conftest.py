"""Shared fixtures: an isolated MLflow store and model cache per test, and ART's random start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests from touching the user's cache, MLflow store or plugin settings."""
    monkeypatch.setenv("MEDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MEDBENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("MEDBENCH_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("MEDBENCH_PLUGINS_ALLOW", raising=False)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def art_starts_like_medbench(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``patch(seed)``: ART's attacks then draw their L∞ random starts as medbench's ``pgd`` does
    for ``seed`` (on the CPU), so that the two can be compared exactly.

    ART draws ``random_sphere`` from NumPy's global generator, medbench from a seeded torch
    generator on the device (:func:`medbench.building.pgd.random_start`).
    """
    from art.attacks.evasion import fast_gradient
    from art.attacks.evasion.projected_gradient_descent import projected_gradient_descent_pytorch

    from medbench.building.pgd import uniform_noise
    from medbench_art.linf_iterative import seeded_generator

    def patch(seed: int) -> None:
        cpu = torch.device("cpu")
        generator = seeded_generator(seed, cpu)

        def random_sphere(nb_points: int, nb_dims: int, radius: Any, norm: Any) -> np.ndarray:
            assert norm == np.inf, "medbench's random start is the L∞ one"
            return uniform_noise((nb_points, nb_dims), float(radius), generator, cpu).numpy()

        for module in (projected_gradient_descent_pytorch, fast_gradient):
            monkeypatch.setattr(module, "random_sphere", random_sphere)

    return patch
