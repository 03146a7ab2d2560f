"""The adversarial-training family: each perturbation is the attack it claims to be, inside its budget."""

from __future__ import annotations

import pytest
import torch

from medbench.testing import check_defense, tiny_estimator
from medbench_art.at_bim import BIMAdversarialTraining
from medbench_art.at_fgsm import FGSMAdversarialTraining
from medbench_art.at_gn import GaussianNoiseTraining
from medbench_art.at_pgd import PGDAdversarialTraining
from medbench_art.bim import BIM
from medbench_art.fgsm import FGSM


def _batch(n: int = 16):  # type: ignore[no-untyped-def]
    estimator, bundle = tiny_estimator(seed=5)
    x = torch.stack([bundle.test[i][0] for i in range(n)])
    y = torch.stack([bundle.test[i][1] for i in range(n)])
    model = estimator.model

    def logits(z: torch.Tensor) -> torch.Tensor:
        return model((z - 0.5) / 0.25)

    return estimator, logits, x, y


def test_at_fgsm_perturbs_exactly_like_arts_fgsm() -> None:
    estimator, logits, x, y = _batch()
    ours = FGSMAdversarialTraining().perturb(logits, x, y, torch.Generator())
    reference = FGSM().generate(estimator, x, y, 8 / 255, seed=0)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_at_bim_perturbs_exactly_like_arts_bim() -> None:
    estimator, logits, x, y = _batch()
    ours = BIMAdversarialTraining().perturb(logits, x, y, torch.Generator())
    bim = BIM().configured({"max_iter": 7, "step_ratio": 0.25})
    reference = bim.generate(estimator, x, y, 8 / 255, seed=0)
    assert torch.allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize(
    "defense",
    [
        PGDAdversarialTraining(),
        FGSMAdversarialTraining(),
        FGSMAdversarialTraining().configured({"random_start": True, "step_ratio": 1.25}),
        BIMAdversarialTraining(),
    ],
    ids=lambda d: f"{d.name}-{d.settings}",
)
def test_training_examples_stay_in_the_ball_and_range(defense) -> None:  # type: ignore[no-untyped-def]
    _, logits, x, y = _batch()
    x_adv = defense.perturb(logits, x, y, torch.Generator().manual_seed(0))
    eps = defense.settings.eps
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float((x_adv - x).abs().max()) > eps / 2
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert not x_adv.requires_grad


def test_at_gn_noise_has_the_requested_spread_and_is_seeded() -> None:
    _, logits, _, y = _batch()
    x = torch.full((64, 1, 16, 16), 0.5)
    defense = GaussianNoiseTraining().configured({"sigma": 0.05})
    first = defense.perturb(logits, x, y, torch.Generator().manual_seed(1))
    again = defense.perturb(logits, x, y, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert float((first - x).std()) == pytest.approx(0.05, rel=0.05)


@pytest.mark.parametrize("name", ["at-fgsm", "at-bim", "at-gn"])
def test_each_training_defense_trains_and_predicts(name: str) -> None:
    from medbench.plugins.host import load_plugins

    defense = load_plugins(check=False).registries.defenses.get(name)
    check_defense(defense)


def test_invalid_training_budgets_are_rejected() -> None:
    from medbench.errors import UsageError

    with pytest.raises(UsageError, match="eps"):
        BIMAdversarialTraining().configured({"eps": 2.0})
    with pytest.raises(UsageError, match="step_ratio"):
        FGSMAdversarialTraining().configured({"step_ratio": 3.0})
    with pytest.raises(UsageError, match="sigma"):
        GaussianNoiseTraining().configured({"sigma": -1.0})
