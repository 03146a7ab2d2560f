"""Out of device memory inside an attack: the batch is attacked in halves and the cell finishes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medbench.cli import main
from medbench_art.fgsm import FGSM

TINY = [
    "run", "--dataset", "phantom2d", "--model", "smallcnn", "--defense", "none", "--attack", "fgsm",
    "--eps", "8/255", "--n-eval", "16", "--epochs", "1", "--eval-batch-size", "16",
    "--set", "dataset.phantom2d.n_samples=200", "--set", "dataset.phantom2d.image_size=16", "--json",
]  # fmt: skip


def test_a_simulated_oom_leads_to_smaller_batches_and_a_finished_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'reference.db'}"
    with pytest.raises(SystemExit):
        main([*TINY, "--tracking-uri", uri])
    reference = json.loads(capsys.readouterr().out)["cells"][0]

    sizes: list[int] = []
    original = FGSM.generate

    def generate(self: Any, estimator: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        sizes.append(len(x))
        if len(x) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, estimator, x, *args, **kwargs)

    monkeypatch.setattr(FGSM, "generate", generate)
    uri = f"sqlite:///{tmp_path / 'oom.db'}"
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--tracking-uri", uri])
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    cell = json.loads(captured.out)["cells"][0]
    assert cell["status"] == "FINISHED"
    assert sizes == [16, 8, 4, 4, 8, 4, 4], "16 fails, then halves until they fit"
    assert "out of device memory on a batch of 16; attacking it in halves" in " ".join(captured.err.split())
    # FGSM has no randomness: the halves give exactly the unsplit result
    for name in ("clean_accuracy", "robust_accuracy", "linf_max", "l2_mean"):
        assert cell["metrics"][name] == pytest.approx(reference["metrics"][name], abs=1e-6)
