"""The ART attacks and Gaussian noise: budgets, ranges, and agreement with independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from medbench.api.toolkit import pgd_linf
from medbench.plugins.host import PluginHost
from medbench.testing import check_attack, tiny_bundle, tiny_estimator
from medbench.wrapping.forward import defended_logits
from medbench_art.bim import BIM
from medbench_art.fgsm import FGSM
from medbench_art.gn import GaussianNoise
from medbench_art.mifgsm import MIFGSM
from medbench_art.pgd import PGD


def _registered_attacks() -> list[str]:
    registry = PluginHost().load().registries.attacks
    return [name for name in registry.names() if "classification" in registry.get(name).tasks]


@pytest.mark.parametrize("name", _registered_attacks())
@pytest.mark.parametrize("budget", [1 / 255, 8 / 255, 0.3])
def test_every_attack_keeps_its_budget_and_the_valid_range(name: str, budget: float) -> None:
    attack = PluginHost().load().registries.attacks.get(name)
    # the DLR loss needs a third-largest logit
    check_attack(attack, budget=budget, bundle=tiny_bundle(classes=3) if name == "apgd-dlr" else None)


def _batch(n: int = 16):  # type: ignore[no-untyped-def]
    estimator, bundle = tiny_estimator(seed=3)
    x = torch.stack([bundle.test[i][0] for i in range(n)])
    y = torch.stack([bundle.test[i][1] for i in range(n)])
    return estimator, x, y


def _input_gradient(estimator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """∇ₓ of the summed cross-entropy through normalisation and model, written out by hand."""
    x = x.clone().requires_grad_(True)
    logits = estimator.model((x - 0.5) / 0.25)
    F.cross_entropy(logits, y, reduction="sum").backward()
    assert x.grad is not None
    return x.grad


def test_fgsm_equals_the_hand_computed_step() -> None:
    estimator, x, y = _batch()
    eps = 4 / 255
    expected = (x + eps * _input_gradient(estimator, x, y).sign()).clamp(0, 1)
    adversarial = FGSM().generate(estimator, x, y, eps, seed=0)
    assert torch.allclose(adversarial, expected, atol=1e-6)


def test_fgsm_equals_art_fast_gradient_method_for_every_budget_from_one_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from art.attacks.evasion import FastGradientMethod

    estimator, x, y = _batch()
    budgets = [1 / 255, 2 / 255, 4 / 255, 8 / 255, 0.3]
    calls = []
    original = estimator.loss_gradient
    monkeypatch.setattr(estimator, "loss_gradient", lambda *a, **k: calls.append(1) or original(*a, **k))
    shared = FGSM().generate_budgets(estimator, x, y, budgets, seeds=[0] * len(budgets))
    assert len(calls) == 1, "one gradient for all budgets"
    monkeypatch.setattr(estimator, "loss_gradient", original)
    for budget, x_adv in zip(budgets, shared, strict=True):
        assert isinstance(x_adv, torch.Tensor)
        alone = FGSM().generate(estimator, x, y, budget, seed=0)
        assert torch.equal(x_adv, alone), "the shared gradient gives bit-identical examples"
        art = FastGradientMethod(estimator, norm=np.inf, eps=budget, eps_step=budget, batch_size=len(x))
        reference = torch.from_numpy(art.generate(x.numpy(), y.numpy()))
        assert torch.allclose(x_adv, reference, atol=1e-6), "equals ART's FastGradientMethod"


def test_bim_matches_the_torch_native_pgd_without_random_start() -> None:
    estimator, x, y = _batch()
    eps = 8 / 255
    attack = BIM().configured({"max_iter": 5, "step_ratio": 0.3})
    art_result = attack.generate(estimator, x, y, eps, seed=0)
    defended_model = estimator.model

    def logits(z: torch.Tensor) -> torch.Tensor:
        return defended_model((z - 0.5) / 0.25)

    ours = pgd_linf(logits, x, y, eps=eps, eps_step=0.3 * eps, steps=5, random_start=False)
    assert torch.allclose(art_result, ours, atol=1e-5)


def test_mifgsm_without_momentum_is_bim() -> None:
    estimator, x, y = _batch()
    eps = 8 / 255
    mi = MIFGSM().configured({"decay": 0.0}).generate(estimator, x, y, eps, seed=0)
    bim = BIM().generate(estimator, x, y, eps, seed=0)
    assert torch.allclose(mi, bim, atol=1e-6)


def test_mifgsm_momentum_follows_dong_et_al() -> None:
    estimator, x, y = _batch(8)
    eps, steps, decay = 8 / 255, 3, 1.0
    step = eps / steps
    x_adv, momentum = x.clone(), torch.zeros_like(x)
    for _ in range(steps):
        grad = _input_gradient(estimator, x_adv, y)
        # Dong et al.: the new gradient is divided by its L1 norm per sample
        momentum = decay * momentum + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = (x_adv + step * momentum.sign()).clamp(0, 1)
        x_adv = x + (x_adv - x).clamp(-eps, eps)
    ours = (
        MIFGSM()
        .configured({"max_iter": steps, "step_ratio": 1 / steps})
        .generate(estimator, x, y, eps, seed=0)
    )
    assert torch.allclose(ours, x_adv, atol=1e-5)


def test_pgd_random_start_is_seeded_and_stronger_steps_do_not_weaken_it() -> None:
    estimator, x, y = _batch()
    eps = 8 / 255
    first = PGD().generate(estimator, x, y, eps, seed=1)
    assert torch.equal(first, PGD().generate(estimator, x, y, eps, seed=1))
    assert not torch.equal(first, PGD().generate(estimator, x, y, eps, seed=2))


def test_gaussian_noise_has_the_requested_spread() -> None:
    x = torch.full((4, 1, 64, 64), 0.5)
    sigma = 8 / 255
    noisy = GaussianNoise().generate(None, x, torch.zeros(4, dtype=torch.long), sigma, seed=0)
    delta = noisy - x
    assert abs(float(delta.std()) - sigma) < 0.05 * sigma
    assert abs(float(delta.mean())) < 0.05 * sigma


def test_torch_pgd_stays_in_the_ball_and_range() -> None:
    estimator, x, y = _batch()
    generator = torch.Generator().manual_seed(0)
    for eps in (0.0, 2 / 255, 0.5):
        out = pgd_linf(
            lambda z: estimator.model((z - 0.5) / 0.25),
            x,
            y,
            eps=eps,
            eps_step=eps / 4,
            steps=4,
            random_start=True,
            generator=generator,
        )
        assert float((out - x).abs().max()) <= eps + 1e-6
        assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_art_and_harness_forward_agree() -> None:
    estimator, x, _ = _batch()
    from medbench.api import DefendedModel, Normalization

    ours = defended_logits(DefendedModel(estimator.model, Normalization((0.5,), (0.25,))), x)
    art_logits = estimator.predict(x.numpy())
    assert np.allclose(ours.detach().numpy(), art_logits, atol=1e-5)


def test_frozen_parameters_give_the_same_examples_and_restore_the_flags() -> None:
    from medbench.api import DefendedModel, Normalization
    from medbench.wrapping.estimators import frozen_parameters

    estimator, x, y = _batch()
    defended = DefendedModel(estimator.model, Normalization((0.5,), (0.25,)))
    first_layer = next(estimator.model.parameters())
    first_layer.requires_grad_(False)  # a deliberately frozen layer stays frozen afterwards
    reference = PGD().generate(estimator, x, y, 8 / 255, seed=4)
    with frozen_parameters(defended):
        assert not any(p.requires_grad for p in estimator.model.parameters())
        frozen = PGD().generate(estimator, x, y, 8 / 255, seed=4)
    assert torch.equal(reference, frozen)
    flags = [p.requires_grad for p in estimator.model.parameters()]
    assert flags[0] is False and all(flags[1:])
