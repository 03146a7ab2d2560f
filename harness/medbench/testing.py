"""Contract checks for plugin authors.

Run them from your own test suite on your own plugin objects::

    from medbench.testing import check_attack, check_dataset, check_defense, check_model

    def test_my_attack_keeps_the_contract():
        check_attack(MyAttack())

Each check raises ``AssertionError`` with an explanation when the plugin breaks the
contract of :mod:`medbench.api` (value range, budget, shapes, determinism, ...). They run
in seconds on a CPU with tiny models and data.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from medbench.api import (
    Attack,
    AttackResult,
    Dataset,
    DatasetBundle,
    DefendedModel,
    Defense,
    Model,
    Normalization,
    Task,
)
from medbench.building.cache import ModelCache
from medbench.building.defending import DefenseBuilder
from medbench.config.spec import TrainingSettings
from medbench.wrapping.estimators import classifier_estimator, predict_logits


class _TinyNet(Model):
    name = "medbench-testing-tinynet"
    description = "a tiny CNN for contract checks"

    def build(self, task: Task, in_channels: int, num_classes: int, weights: str | None = None) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64, num_classes),
        )


def tiny_bundle(
    n: int = 48, size: int = 16, channels: int = 1, classes: int = 2, seed: int = 0
) -> DatasetBundle:
    """A small learnable classification dataset (class = brighter left or right half)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = 0.3 + 0.1 * torch.rand(n, channels, size, size, generator=generator)
    half = size // 2
    for index, label in enumerate(labels.tolist()):
        if label % 2 == 0:
            images[index, :, :, :half] += 0.4
        else:
            images[index, :, :, half:] += 0.4
    images = images.clamp(0, 1)
    split = TensorDataset(images, labels)
    return DatasetBundle(
        train=split,
        val=split,
        test=split,
        class_names=tuple(f"class_{i}" for i in range(classes)),
        input_shape=(channels, size, size),
        fingerprint=f"tiny-{n}-{size}-{channels}-{classes}-{seed}",
    )


def tiny_estimator(bundle: DatasetBundle | None = None, seed: int = 0) -> tuple[Any, DatasetBundle]:
    """An ART ``PyTorchClassifier`` around an untrained tiny CNN, and the bundle it fits."""
    bundle = bundle or tiny_bundle()
    torch.manual_seed(seed)
    model = _TinyNet().build("classification", bundle.in_channels, bundle.num_classes)
    defended = DefendedModel(model, Normalization((0.5,) * bundle.in_channels, (0.25,) * bundle.in_channels))
    return classifier_estimator(defended, bundle, torch.device("cpu")), bundle


def check_attack(
    attack: Attack, budget: float | None = None, seed: int = 0, bundle: DatasetBundle | None = None
) -> None:
    """The attack returns a same-shaped tensor in [0, 1], inside its budget, reproducibly.

    ``bundle`` replaces the default two-class :func:`tiny_bundle` (an attack that needs three
    classes, such as APGD-DLR, passes ``tiny_bundle(classes=3)``).
    """
    assert attack.name and isinstance(attack.name, str), "an attack needs a name"
    assert attack.default_budgets, f"attack {attack.name!r} declares no default budgets"
    budget = attack.default_budgets[-1] if budget is None else budget
    estimator, bundle = tiny_estimator(bundle)
    x = torch.stack([bundle.test[i][0] for i in range(8)])
    y = torch.stack([bundle.test[i][1] for i in range(8)])
    generated = attack.generate(estimator, x, y, budget, seed=seed)
    first = _adversarial(generated)
    assert isinstance(first, torch.Tensor), (
        f"{attack.name}: generate must return a torch.Tensor or AttackResult"
    )
    if isinstance(generated, AttackResult):
        for name, total in generated.totals.items():
            assert math.isfinite(total) and total >= 0, f"{attack.name}: total {name!r} is {total}"
    assert first.shape == x.shape, f"{attack.name}: shape {tuple(first.shape)} != {tuple(x.shape)}"
    assert first.device == x.device, f"{attack.name}: output moved to {first.device}"
    assert torch.isfinite(first).all(), f"{attack.name}: NaN or infinite output"
    assert float(first.min()) >= 0 and float(first.max()) <= 1, f"{attack.name}: output outside [0, 1]"
    delta = (first - x).flatten(1)
    if attack.threat_model == "linf":
        assert float(delta.abs().max()) <= budget + 1e-6, f"{attack.name}: L∞ norm exceeds ε={budget}"
    elif attack.threat_model == "l2":
        assert float(delta.norm(dim=1).max()) <= budget + 1e-5, f"{attack.name}: L2 norm exceeds ε={budget}"
    second = _adversarial(attack.generate(estimator, x, y, budget, seed=seed))
    assert torch.equal(first, second), f"{attack.name}: two runs with the same seed differ"
    zero = _adversarial(attack.generate(estimator, x, y, 0.0, seed=seed))
    if attack.budget_on_intensity_scale:
        assert torch.allclose(zero, x, atol=1e-6), f"{attack.name}: a zero budget changed the input"


def _adversarial(generated: torch.Tensor | AttackResult) -> torch.Tensor:
    return generated.x_adv if isinstance(generated, AttackResult) else generated


def check_dataset(dataset: Dataset, data_dir: Path | None = None, seed: int = 0) -> DatasetBundle:
    """Splits are non-empty, items match ``input_shape``, values are in [0, 1], loading is deterministic."""
    bundle = dataset.load(data_dir, seed)
    assert bundle.fingerprint, f"dataset {dataset.name!r}: empty fingerprint"
    assert bundle.num_classes >= 2, f"dataset {dataset.name!r}: fewer than two classes"
    for split_name in ("train", "val", "test"):
        split = getattr(bundle, split_name)
        assert len(split) > 0, f"dataset {dataset.name!r}: empty {split_name} split"
        image, label = split[0]
        assert tuple(image.shape) == tuple(bundle.input_shape), (
            f"dataset {dataset.name!r}: {split_name} item shape {tuple(image.shape)} != {bundle.input_shape}"
        )
        assert image.dtype == torch.float32, f"dataset {dataset.name!r}: images must be float32"
        assert float(image.min()) >= 0 and float(image.max()) <= 1, (
            f"dataset {dataset.name!r}: outside [0, 1]"
        )
        if not bundle.multilabel and bundle.task == "classification":
            assert 0 <= int(label) < bundle.num_classes, (
                f"dataset {dataset.name!r}: label {label} out of range"
            )
    again = dataset.load(data_dir, seed)
    assert again.fingerprint == bundle.fingerprint, f"dataset {dataset.name!r}: fingerprint not deterministic"
    assert torch.equal(again.test[0][0], bundle.test[0][0]), (
        f"dataset {dataset.name!r}: loading not deterministic"
    )
    return bundle


def check_model(model: Model, in_channels: int = 1, num_classes: int = 3, size: int = 32) -> None:
    """The module maps normalised input to ``(N, num_classes)`` finite logits, differentiably."""
    module = model.build("classification", in_channels, num_classes, None)
    assert isinstance(module, nn.Module), f"model {model.name!r}: build must return an nn.Module"
    normalization = model.normalization(in_channels)
    assert len(normalization.for_channels(in_channels).mean) == in_channels
    module.eval()
    x = torch.rand(2, in_channels, size, size, requires_grad=True)
    logits = module(x)
    assert tuple(logits.shape) == (2, num_classes), (
        f"model {model.name!r}: logits shape {tuple(logits.shape)}"
    )
    assert torch.isfinite(logits).all(), f"model {model.name!r}: NaN logits"
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), f"model {model.name!r}: no input gradient"


def check_defense(
    defense: Defense,
    standard: Defense | None = None,
    epochs: int = 1,
    *,
    model: Model | None = None,
    bundle: DatasetBundle | None = None,
) -> DefendedModel:
    """The defense builds and trains on a tiny dataset; the result gives finite logits through ART.

    Args:
        defense: The configured defense to check.
        standard: The defense ``none`` (loaded from the installed plugins by default).
        epochs: Training epochs.
        model: The model plugin to defend (default: a tiny CNN). Defenses that need a
            particular architecture (a ResNet for ``dcnn``) pass one.
        bundle: The dataset (default: :func:`tiny_bundle`, 16x16 gray images).
    """
    bundle = bundle if bundle is not None else tiny_bundle()
    model = model if model is not None else _TinyNet()
    if standard is None:
        from medbench.building.defending import STANDARD_DEFENSE
        from medbench.plugins.host import load_plugins

        standard = load_plugins(check=False).registries.defenses.get(STANDARD_DEFENSE)
    with tempfile.TemporaryDirectory() as directory:
        builder = DefenseBuilder(
            dataset=bundle,
            model_name=model.name,
            model=model,
            weights=None,
            standard=standard,
            training=TrainingSettings(epochs=epochs, batch_size=16),
            device=torch.device("cpu"),
            seed=0,
            cache=ModelCache(Path(directory)),
        )
        defended = builder.build([defense])
    assert isinstance(defended, DefendedModel), f"defense {defense.name!r}: build must return a DefendedModel"
    estimator = classifier_estimator(defended, bundle, torch.device("cpu"))
    x = torch.stack([bundle.test[i][0] for i in range(8)])
    logits = predict_logits(estimator, x)
    assert tuple(logits.shape) == (8, bundle.num_classes), f"defense {defense.name!r}: logits shape"
    assert torch.isfinite(logits).all(), f"defense {defense.name!r}: NaN logits"
    return defended
