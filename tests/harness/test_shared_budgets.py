"""FGSM at several budgets in one matrix: one gradient per batch, the same cells as one budget at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import medbench_art.fgsm
from medbench.cli import main

TINY = [
    "run", "--dataset", "phantom2d", "--model", "smallcnn", "--defense", "none", "--attack", "fgsm",
    "--n-eval", "24", "--eval-batch-size", "16", "--epochs", "1", "--json",
    "--set", "dataset.phantom2d.n_samples=200", "--set", "dataset.phantom2d.image_size=16",
]  # fmt: skip


def _cells(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[float, dict[str, Any]]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    return {cell["budget"]: cell for cell in json.loads(captured.out)["cells"]}


def test_fgsm_budgets_share_one_gradient_and_match_single_budget_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = medbench_art.fgsm.input_gradient

    def counting(estimator: Any, x: Any, y: Any) -> Any:
        calls.append(len(x))
        return original(estimator, x, y)

    monkeypatch.setattr(medbench_art.fgsm, "input_gradient", counting)
    budgets = ["2/255", "4/255", "8/255"]
    together = _cells(
        [*TINY, "--eps", ",".join(budgets), "--tracking-uri", f"sqlite:///{tmp_path / 'a.db'}"], capsys
    )
    assert calls == [16, 8], "one gradient per evaluation batch for the three budgets"
    for number, budget in enumerate(budgets):
        calls.clear()
        alone = _cells(
            [*TINY, "--eps", budget, "--tracking-uri", f"sqlite:///{tmp_path / f'{number}.db'}"], capsys
        )
        assert calls == [16, 8]
        ((value, cell),) = alone.items()
        for name in ("robust_accuracy", "attack_success_rate", "linf_max", "l2_mean", "ssim_mean"):
            assert together[value]["metrics"][name] == cell["metrics"][name], (budget, name)
    assert all(cell["metrics"]["seconds"] > 0 for cell in together.values())
