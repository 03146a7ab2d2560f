"""GPU path: attacks and the matrix on CUDA (skipped without a CUDA device)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from medbench.api import AttackResult, DefendedModel, Normalization
from medbench.cli import main
from medbench.plugins.host import PluginHost
from medbench.testing import tiny_bundle, tiny_estimator
from medbench.wrapping.estimators import classifier_estimator, predict_logits

pytestmark = pytest.mark.gpu


def test_every_attack_runs_on_the_gpu_within_budget() -> None:
    cpu_estimator, bundle = tiny_estimator(tiny_bundle(classes=3), seed=3)
    device = torch.device("cuda")
    model = copy.deepcopy(cpu_estimator.model).to(device)
    estimator = classifier_estimator(DefendedModel(model, Normalization((0.5,), (0.25,))), bundle, device)
    x = torch.stack([bundle.test[i][0] for i in range(16)]).to(device)
    y = torch.stack([bundle.test[i][1] for i in range(16)]).to(device)
    for attack in PluginHost().load().registries.attacks:
        if "classification" not in attack.tasks:
            continue
        generated = attack.generate(estimator, x, y, 8 / 255, seed=0)
        x_adv = generated.x_adv if isinstance(generated, AttackResult) else generated
        assert x_adv.device.type == "cuda", attack.name
        assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1, attack.name
        if attack.threat_model == "linf":
            assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6, attack.name
    cpu_logits = predict_logits(cpu_estimator, x.cpu())
    assert torch.allclose(predict_logits(estimator, x).cpu(), cpu_logits, atol=1e-4)


def test_tiny_matrix_on_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "run",
        "--set",
        "dataset.phantom2d.n_samples=240",
        "--set",
        "dataset.phantom2d.image_size=32",
        "--epochs",
        "1",
        "--n-eval",
        "24",
        "--attack",
        "fgsm,pgd",
        "--eps",
        "8/255",
        "--device",
        "cuda",
        "--tracking-uri",
        uri,
        "--json",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0, capsys.readouterr().err
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert all(cell["status"] == "FINISHED" for cell in cells)
