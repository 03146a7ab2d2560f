"""VAFA's differentiable rounding (AdvDrop's phi_diff) and its alpha schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medbench_vafa.quantization import alpha_schedule, soft_round

X = [0.0, 0.25, 0.5, 0.75, -0.25, 1.3, 2.9]


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (0.1, [0.0, 0.151784, 0.5, 0.848216, -0.151784, 1.206058, 2.959305]),
        (0.005, [0.0, 0.045403, 0.5, 0.954597, -0.045403, 1.081417, 2.994237]),
    ],
)
def test_golden_values(alpha: float, expected: list[float]) -> None:
    out = soft_round(torch.tensor(X, dtype=torch.float64), alpha)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.005, 1e-20])
def test_exact_at_integers_and_half_integers(alpha: float) -> None:
    grid = torch.arange(-20, 21, dtype=torch.float64) / 2
    np.testing.assert_allclose(soft_round(grid, alpha).numpy(), grid.numpy(), rtol=0, atol=1e-12)


def test_tends_to_round_as_alpha_vanishes() -> None:
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    x = x[(x - torch.floor(x) - 0.5).abs() > 0.05]  # away from the half-integers
    # k = log(2/alpha - 1) grows only logarithmically: at alpha = 1e-20, k ≈ 46 and the error 0.05
    # from a half-integer is still ~1e-2, so go all the way down to 1e-300.
    alphas = (0.1, 1e-3, 1e-20, 1e-300)
    errors = [(soft_round(x, alpha) - torch.round(x)).abs().max().item() for alpha in alphas]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-12


def test_odd_symmetry_around_half_integers() -> None:
    half = (torch.arange(-6, 6, dtype=torch.float64) + 0.5).unsqueeze(1)
    t = torch.linspace(0.0, 0.49, 11, dtype=torch.float64).unsqueeze(0)
    for alpha in (0.1, 0.02):
        above = soft_round(half + t, alpha) - half
        below = soft_round(half - t, alpha) - half
        np.testing.assert_allclose(above.numpy(), -below.numpy(), rtol=0, atol=1e-12)


def test_gradient_is_positive() -> None:
    x = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    soft_round(x, 0.05).sum().backward()
    assert x.grad is not None and bool((x.grad > 0).all())


def test_alpha_is_clamped_at_two() -> None:
    x = torch.tensor([0.2, 0.7, 1.9])
    torch.testing.assert_close(soft_round(x, 5.0), soft_round(x, 2.0), equal_nan=True)


@pytest.mark.parametrize("alpha", [0.0, -0.1])
def test_non_positive_alpha_raises(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must be > 0"):
        soft_round(torch.zeros(3), alpha)


def test_alpha_schedule() -> None:
    alphas = alpha_schedule(20)
    assert len(alphas) == 20
    np.testing.assert_allclose(alphas, [0.1 - 0.005 * i for i in range(20)], rtol=0, atol=1e-15)
    assert alphas[0] == 0.1
    assert alphas[-1] == pytest.approx(0.005)
    assert alpha_schedule(1, 0.5, 0.0) == [0.5]
    with pytest.raises(ValueError, match="steps"):
        alpha_schedule(0)
