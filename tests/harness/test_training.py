"""The shared training loop and the model cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medbench.api import DefendedModel, Normalization
from medbench.building.cache import ModelCache, stable_hash
from medbench.building.training import evaluate_accuracy, train_defended
from medbench.config.spec import TrainingSettings
from medbench.errors import CellError
from medbench.testing import tiny_bundle
from medbench_models.smallcnn import SmallCNN


def _defended(seed: int = 0) -> DefendedModel:
    torch.manual_seed(seed)
    model = SmallCNN().build("classification", 1, 2)
    return DefendedModel(model, Normalization((0.5,), (0.25,)))


def test_training_learns_the_tiny_task_and_keeps_the_best_epoch() -> None:
    bundle = tiny_bundle(n=64)
    defended = _defended()
    history = train_defended(
        defended, bundle, TrainingSettings(epochs=4, batch_size=16), torch.device("cpu"), 0
    )
    assert len(history.val_accuracy) == 4 and history.best_epoch is not None
    kept = evaluate_accuracy(defended, bundle, "val", torch.device("cpu"))
    assert kept == max(history.val_accuracy)
    assert kept >= 0.9


def test_training_is_deterministic_for_a_seed() -> None:
    bundle = tiny_bundle(n=48)
    settings = TrainingSettings(epochs=1, batch_size=16)
    first, second = _defended(), _defended()
    train_defended(first, bundle, settings, torch.device("cpu"), 3)
    train_defended(second, bundle, settings, torch.device("cpu"), 3)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_diverging_training_is_a_cell_error() -> None:
    bundle = tiny_bundle(n=32)
    defended = _defended()

    def nan_loss(model: DefendedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model.model((x - 0.5) / 0.25).sum() * float("nan")

    with pytest.raises(CellError, match="training diverged"):
        train_defended(defended, bundle, TrainingSettings(epochs=1), torch.device("cpu"), 0, loss=nan_loss)


def test_cache_round_trip_and_corrupt_entries(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    defended = _defended()
    key = stable_hash({"what": "test"})
    assert cache.load(key) is None
    cache.save(key, defended.state_dicts(), {"note": "test"})
    other = _defended(seed=1)
    states = cache.load(key)
    assert states is not None
    other.load_state_dicts(states)
    for a, b in zip(defended.model.state_dict().values(), other.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    meta = json.loads((tmp_path / "models" / f"{key}.json").read_text())
    assert (
        meta["note"] == "test" and meta["sha256"] == hashlib.sha256(cache.path(key).read_bytes()).hexdigest()
    )
    altered = _defended(seed=2)
    torch.save({name: dict(sd) for name, sd in altered.state_dicts().items()}, cache.path(key))
    assert cache.load(key) is None, "a readable file whose hash differs from the recorded one is not reused"
    cache.path(key).write_bytes(b"truncated")
    assert cache.load(key) is None, "an unreadable entry is a miss, not a crash"
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file is left behind"
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})


def test_example_grid_has_three_rows_and_enlarges_small_images(tmp_path: Path) -> None:
    from PIL import Image

    from medbench.reporting.images import example_grid

    x = torch.rand(5, 1, 32, 32)
    x_adv = (x + 0.03).clamp(0, 1)
    path = example_grid(x, x_adv, tmp_path / "grid.png", count=4)
    with Image.open(path) as picture:
        scale = 3  # 96 // 32
        assert picture.size == ((4 * 34 + 2) * scale, (3 * 34 + 2) * scale)
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32))
    perturbation_row = pixels[(2 * 34 + 2) * scale : (3 * 34) * scale, 2 * scale : 34 * scale]
    assert float(perturbation_row.min()) > 127, "a positive perturbation is drawn above mid-grey"
