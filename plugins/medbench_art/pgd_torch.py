"""A torch-native L∞ PGD used inside training loops (adversarial training).

It takes exactly ART's PGD steps (``x ← clip(x + α·sign(∇), 0, 1)``, then projection of
``x − x₀`` onto the ε-ball) without leaving the device and without computing parameter
gradients; tests check it against ART's ``ProjectedGradientDescent``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from medbench_art.linf_iterative import linf_iterations
from medbench_art.linf_iterative import random_start as draw_random_start

Logits = Callable[[torch.Tensor], torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    start = draw_random_start(x0, eps, generator) if random_start else x0

    def gradient(z: torch.Tensor) -> torch.Tensor:
        z = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(logits(z), y), z)
        return grad

    return linf_iterations(gradient, x0, start, eps=eps, eps_step=eps_step, steps=steps)
