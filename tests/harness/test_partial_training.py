"""Training only some parameters leaves the others, their BatchNorm statistics and their gradients alone."""

from __future__ import annotations

import torch
from torch import nn

from medbench.api import DefendedModel, Normalization
from medbench.building.training import train_defended
from medbench.config.spec import TrainingSettings
from medbench.testing import tiny_bundle


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(16, 2),
    )


def test_a_frozen_part_keeps_weights_statistics_and_gets_no_gradients() -> None:
    model = _model()
    frozen_state = {k: v.clone() for k, v in model[:2].state_dict().items()}
    head_before = model[6].weight.detach().clone()
    modes: list[tuple[bool, bool]] = []

    def loss(defended: DefendedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        modes.append((defended.model[1].training, defended.model[5].training))
        return nn.functional.cross_entropy(defended.model((x - 0.5) / 0.25), y)

    defended = DefendedModel(model, Normalization((0.5,), (0.25,)))
    train_defended(
        defended,
        tiny_bundle(),
        TrainingSettings(epochs=2, batch_size=8, keep_best=False),
        torch.device("cpu"),
        0,
        loss=loss,
        parameters=list(model[6].parameters()),
    )
    for key, value in model[:2].state_dict().items():
        assert torch.equal(value, frozen_state[key]), key
    assert not torch.equal(model[6].weight, head_before)
    assert all(p.grad is None for p in model[:2].parameters())
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    # the frozen BatchNorm ran in eval mode, the trained head's dropout in training mode
    assert modes and all(mode == (False, True) for mode in modes)


def test_a_defense_can_train_for_its_own_number_of_epochs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from medbench.building.cache import ModelCache
    from medbench.building.defending import DefenseBuilder
    from medbench.plugins.host import load_plugins
    from medbench.testing import _TinyNet

    defenses = load_plugins(check=False).registries.defenses
    histories = {}
    builder = DefenseBuilder(
        dataset=tiny_bundle(),
        model_name=_TinyNet.name,
        model=_TinyNet(),
        weights=None,
        standard=defenses.get("none"),
        training=TrainingSettings(epochs=1, batch_size=16),
        device=torch.device("cpu"),
        seed=0,
        cache=ModelCache(tmp_path),
        on_trained=lambda label, history: histories.setdefault(label, history),
    )
    builder.build([defenses.get("reformer").configured({"epochs": 3})])
    assert len(histories["none"].train_loss) == 1
    assert len(histories["reformer[epochs=3]"].train_loss) == 3
