"""A torch-native L∞ PGD used inside training loops (adversarial training, HGD's denoiser).

It takes exactly ART's PGD steps (``x ← clip(x + α·sign(∇), 0, 1)``, then projection of
``x − x₀`` onto the ε-ball) without leaving the device and without computing parameter
gradients; tests check it against ART's ``ProjectedGradientDescent``. The random start is
ART's distribution, ``clip(x₀ + uniform(−ε, ε), 0, 1)``, drawn on the inputs' device from a
torch generator.

:func:`linf_iterations` and :func:`random_start` are also the steps and the start of the
``bim`` / ``pgd`` / ``mifgsm`` attacks, which take their gradient from the estimator instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from medbench.building.training import Criterion

Logits = Callable[[torch.Tensor], torch.Tensor]
"""A differentiable forward pass from [0, 1] input to logits."""
Gradient = Callable[[torch.Tensor], torch.Tensor]
"""``x -> ∇ₓ loss`` at the current iterate (the ascent direction)."""


def linf_iterations(
    gradient: Gradient,
    x0: torch.Tensor,
    start: torch.Tensor,
    *,
    eps: float,
    eps_step: float,
    steps: int,
    decay: float | None = None,
) -> torch.Tensor:
    """Run ``steps`` signed-gradient steps from ``start``, projected onto the ε-ball of ``x0`` and [0, 1].

    Args:
        gradient: ``x -> ∇ₓ loss`` at the current iterate (ascent direction).
        x0: Clean inputs in [0, 1], the centre of the ball.
        start: First iterate (``x0`` itself, or a random point of the ball).
        eps: L∞ radius.
        eps_step: Step size α.
        steps: Number of steps.
        decay: Momentum decay μ of MI-FGSM; None for plain signed steps.

    Returns:
        The last iterate, detached.
    """
    x_adv = start.detach()
    momentum = torch.zeros_like(x0) if decay is not None else None
    for _ in range(steps):
        grad = gradient(x_adv)
        grad = grad.masked_fill(grad.isnan(), 0.0)
        if momentum is not None and decay is not None:
            flat = grad.reshape(len(grad), -1)
            norm1 = torch.linalg.norm(flat, ord=1, dim=1, keepdim=True)
            # ART's guard: an all-zero gradient row contributes nothing instead of 0/0
            momentum.mul_(decay).add_((flat * norm1.where(norm1 == 0, 1 / norm1)).reshape(grad.shape))
            grad = momentum
        with torch.no_grad():
            x_adv = (x_adv + eps_step * grad.sign()).clamp(0.0, 1.0)
            x_adv = x0 + (x_adv - x0).clamp(-eps, eps)
    return x_adv.detach()


def uniform_noise(
    shape: tuple[int, ...], eps: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``uniform(−ε, ε)`` float32 noise of ``shape`` on ``device``: the draw of :func:`random_start`."""
    return (2 * torch.rand(shape, generator=generator, device=device) - 1) * eps


def random_start(x0: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """ART's L∞ random start, ``clip(x₀ + uniform(−ε, ε), 0, 1)``, drawn on ``x0``'s device.

    Args:
        x0: Clean inputs in [0, 1] (float32).
        eps: L∞ radius.
        generator: Torch generator on ``x0``'s device; None draws from torch's default one.
    """
    return (x0 + uniform_noise(tuple(x0.shape), eps, generator, x0.device)).clamp(0.0, 1.0)


_random_start = random_start  # ``pgd_linf``'s flag of the same name shadows it


def pgd_linf(
    logits: Logits,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    eps_step: float,
    steps: int,
    random_start: bool,
    generator: torch.Generator | None = None,
    loss: Criterion = F.cross_entropy,
) -> torch.Tensor:
    """Untargeted L∞ PGD ascending ``loss`` (cross-entropy by default).

    Args:
        logits: Differentiable forward pass from [0, 1] input to logits.
        x: Clean inputs in [0, 1].
        y: Labels, as ``loss`` takes them.
        eps: Radius of the L∞ ball.
        eps_step: Step size.
        steps: Number of steps.
        random_start: Start at a uniform random point of the ball (clipped to [0, 1]).
        generator: Random generator for the start (on ``x``'s device).
        loss: ``(logits, y) -> scalar``: the task's loss (BCE for multi-label data, Dice+CE
            for segmentation).

    Returns:
        Adversarial inputs within ``eps`` of ``x`` and inside [0, 1], detached.
    """
    x0 = x.detach()
    start = _random_start(x0, eps, generator) if random_start else x0

    def gradient(z: torch.Tensor) -> torch.Tensor:
        z = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(logits(z), y), z)
        return grad

    return linf_iterations(gradient, x0, start, eps=eps, eps_step=eps_step, steps=steps)
