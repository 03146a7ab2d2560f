"""lpips_sim: left out with a reason when its pieces are missing; computed from local files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from medbench.measuring.lpips_similarity import ALEXNET_FILE, lpips_similarity


def test_missing_weights_give_a_reason_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDBENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reason = lpips_similarity(torch.device("cpu"))
    assert isinstance(reason, str)
    assert ALEXNET_FILE in reason or "lpips" in reason


def test_similarity_from_a_local_alexnet_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lpips")
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / ALEXNET_FILE)
    monkeypatch.setenv("MEDBENCH_WEIGHTS_DIR", str(tmp_path))
    similarity = lpips_similarity(torch.device("cpu"))
    assert callable(similarity)
    x = torch.rand(2, 1, 4, 32, 32)
    same = similarity(x, x)
    assert same.shape == (2,) and torch.allclose(same, torch.ones(2))
    noisy = similarity(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1))
    assert (noisy < 1).all()
