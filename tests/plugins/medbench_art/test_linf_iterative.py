"""BIM, PGD and MI-FGSM in torch against ART's own attack objects: bit-identical on the CPU.

medbench draws PGD's random start on the device from a seeded torch generator, ART from NumPy's
global one: the fixture ``art_starts_like_medbench`` gives ART the same draw, so that the two
attacks start from the same point and every step can be compared exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from art.attacks.evasion import BasicIterativeMethod, MomentumIterativeMethod, ProjectedGradientDescent
from torch import nn

from medbench.api import DefendedModel, Normalization
from medbench.api.toolkit import linf_iterations, random_start
from medbench.testing import tiny_bundle, tiny_estimator
from medbench.wrapping.estimators import classifier_estimator, predict_logits
from medbench_art.bim import BIM
from medbench_art.linf_iterative import seeded_generator
from medbench_art.mifgsm import MIFGSM
from medbench_art.pgd import PGD


def _batch(n: int = 16) -> tuple[Any, torch.Tensor, torch.Tensor]:
    estimator, bundle = tiny_estimator(seed=3)
    x = torch.stack([bundle.test[i][0] for i in range(n)])
    y = torch.stack([bundle.test[i][1] for i in range(n)])
    return estimator, x, y


def _art(attack: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(attack.generate(x=x.numpy(), y=y.numpy()))


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255, 0.3])
def test_pgd_equals_art_projected_gradient_descent(eps: float, art_starts_like_medbench: Any) -> None:
    estimator, x, y = _batch()
    ours = PGD().configured({"max_iter": 5}).generate(estimator, x, y, eps, seed=7)
    art = ProjectedGradientDescent(
        estimator,
        norm=np.inf,
        eps=eps,
        eps_step=0.25 * eps,
        max_iter=5,
        num_random_init=1,
        batch_size=len(x),
        verbose=False,
    )
    art_starts_like_medbench(7)
    assert torch.equal(ours, _art(art, x, y))


def _near_the_boundary() -> tuple[Any, torch.Tensor, torch.Tensor]:
    """A linear model on near-constant images: small perturbations flip some predictions."""
    generator = torch.Generator().manual_seed(0)
    x = (0.5 + 0.02 * torch.randn(32, 1, 16, 16, generator=generator)).clamp(0, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 2))
    estimator = classifier_estimator(
        DefendedModel(model, Normalization((0.5,), (0.25,))), tiny_bundle(), torch.device("cpu")
    )
    return estimator, x, predict_logits(estimator, x).argmax(1)


def test_pgd_restarts_keep_what_art_keeps(art_starts_like_medbench: Any) -> None:
    estimator, x, y = _near_the_boundary()
    eps = 1 / 255
    ours = PGD().configured({"max_iter": 1, "num_random_init": 3}).generate(estimator, x, y, eps, seed=11)
    art = ProjectedGradientDescent(
        estimator,
        norm=np.inf,
        eps=eps,
        eps_step=0.25 * eps,
        max_iter=1,
        num_random_init=3,
        batch_size=len(x),
        verbose=False,
    )
    art_starts_like_medbench(11)
    assert torch.equal(ours, _art(art, x, y))
    single = PGD().configured({"max_iter": 1}).generate(estimator, x, y, eps, seed=11)
    assert not torch.equal(ours, single), "the restarts replaced some samples"


@pytest.mark.parametrize("eps", [1 / 255, 8 / 255])
def test_bim_equals_art_basic_iterative_method(eps: float) -> None:
    estimator, x, y = _batch()
    ours = BIM().configured({"max_iter": 6, "step_ratio": 0.3}).generate(estimator, x, y, eps, seed=0)
    art = BasicIterativeMethod(
        estimator, eps=eps, eps_step=0.3 * eps, max_iter=6, batch_size=len(x), verbose=False
    )
    assert torch.equal(ours, _art(art, x, y))


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_mifgsm_equals_art_momentum_iterative_method(decay: float) -> None:
    estimator, x, y = _batch()
    eps = 8 / 255
    ours = MIFGSM().configured({"max_iter": 5, "decay": decay}).generate(estimator, x, y, eps, seed=0)
    art = MomentumIterativeMethod(
        estimator,
        norm=np.inf,
        eps=eps,
        eps_step=eps / 10,
        decay=decay,
        max_iter=5,
        batch_size=len(x),
        verbose=False,
    )
    assert torch.equal(ours, _art(art, x, y))


def test_one_gradient_per_step_and_no_prediction_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """One loss gradient per step and nothing else: ART's closing ``compute_success`` is gone."""
    estimator, x, y = _batch()
    calls = {"gradient": 0, "predict": 0}
    gradient, predict = estimator.loss_gradient, estimator._predict_framework

    def counted_gradient(*args: Any, **kwargs: Any) -> Any:
        calls["gradient"] += 1
        return gradient(*args, **kwargs)

    def counted_predict(*args: Any, **kwargs: Any) -> Any:
        calls["predict"] += 1
        return predict(*args, **kwargs)

    monkeypatch.setattr(estimator, "loss_gradient", counted_gradient)
    monkeypatch.setattr(estimator, "_predict_framework", counted_predict)
    monkeypatch.setattr(estimator, "predict", lambda *a, **k: pytest.fail("no NumPy prediction"))
    PGD().configured({"max_iter": 4}).generate(estimator, x, y, 4 / 255, seed=0)
    assert calls == {"gradient": 4, "predict": 0}


def test_nan_gradients_are_zero_steps_and_the_ball_holds() -> None:
    x0 = torch.rand(4, 1, 8, 8)

    def gradient(z: torch.Tensor) -> torch.Tensor:
        grad = torch.ones_like(z)
        grad[:, :, :4] = float("nan")
        return grad

    out = linf_iterations(gradient, x0, x0, eps=0.05, eps_step=0.02, steps=5)
    assert torch.equal(out[:, :, :4], x0[:, :, :4]), "NaN entries do not move"
    moved = out[:, :, 4:] - x0[:, :, 4:]
    assert float(moved.max()) <= 0.05 + 1e-7 and float(out.max()) <= 1.0
    assert torch.allclose(out[:, :, 4:], (x0[:, :, 4:] + 0.05).clamp(max=1.0), atol=1e-6)


def test_the_random_start_is_seeded_uniform_in_the_ball_and_drawn_without_numpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: pytest.fail("the start is drawn in torch"))
    x0 = torch.rand(64, 1, 32, 32)
    eps = 8 / 255
    start = random_start(x0, eps, seeded_generator(5, x0.device))
    assert torch.equal(start, random_start(x0, eps, seeded_generator(5, x0.device))), "same seed, same start"
    assert not torch.equal(start, random_start(x0, eps, seeded_generator(6, x0.device)))
    assert float((start - x0).abs().max()) <= eps + 1e-7
    assert float(start.min()) >= 0.0 and float(start.max()) <= 1.0
    # away from the clipping, the offsets are uniform on [-eps, eps]: mean 0, variance eps²/3
    inside = (x0 > eps) & (x0 < 1 - eps)
    offsets = (start - x0)[inside] / eps
    assert abs(float(offsets.mean())) < 0.02 and abs(float(offsets.var()) - 1 / 3) < 0.02
    estimator, x, y = _batch()
    PGD().configured({"max_iter": 1}).generate(estimator, x, y, eps, seed=5)  # no NumPy draw either
