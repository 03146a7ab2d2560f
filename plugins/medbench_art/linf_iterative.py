"""L∞ iterative attacks (BIM, PGD, MI-FGSM) taken in torch from the estimator's loss gradient.

Each step is the step of ART's ``ProjectedGradientDescent`` (its PyTorch path; the NumPy path
takes the same step):

1. ``g ← ∇ₓ L`` from the estimator's ``loss_gradient`` (normalisation, defences, BPDA and EOT
   included), NaN entries set to 0;
2. MI-FGSM only: ``m ← μ·m + g / ‖g‖₁`` per sample, and ``g ← m``;
3. ``x ← clip(x + α·sign(g), 0, 1)``;
4. ``x ← x₀ + clip(x − x₀, −ε, ε)``.

The random start is ART's too: ``uniform(−ε, ε)`` drawn from NumPy's global generator (seeded
per batch by the harness) and clipped to [0, 1], so a seed gives the same examples as ART's
attack. Tests compare the two bit for bit on the CPU.

What this saves over running ART's attack object: everything stays on the estimator's device
(one host copy of the random start per batch, none per step), there is no per-step float64
projection or host synchronisation, and no ``compute_success`` pass at the end, which costs ART
two extra forward passes per batch only to log a success rate.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from art.estimators.classification.classifier import ClassifierMixin

from medbench.api import Attack
from medbench.estimators import art_labels, input_gradient, predict_logits
from medbench_art._art_bridge import seed_everything

Gradient = Callable[[torch.Tensor], torch.Tensor]


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


def art_random_start(x0: torch.Tensor, eps: float) -> torch.Tensor:
    """ART's L∞ random start: ``clip(x₀ + uniform(−ε, ε), 0, 1)`` from NumPy's global generator."""
    noise = np.random.uniform(-eps, eps, (len(x0), int(np.prod(x0.shape[1:])))).astype(np.float32)
    return (x0 + torch.from_numpy(noise).reshape(x0.shape).to(x0.device)).clamp(0.0, 1.0)


def _decisions(estimator: Any, x: torch.Tensor, multi_label: bool) -> torch.Tensor:
    logits = predict_logits(estimator, x)
    return logits > 0 if multi_label else logits.argmax(dim=1)


def changed_decisions(
    estimator: Any, x_clean: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Samples whose prediction on ``x_adv`` differs from that on ``x_clean`` (ART's restart criterion).

    For multi-label data (2-D ``y``) a sample counts when any label decision changes.
    """
    multi_label = y.dim() == 2
    before, after = _decisions(estimator, x_clean, multi_label), _decisions(estimator, x_adv, multi_label)
    changed = before != after
    return changed.flatten(1).any(dim=1) if multi_label else changed


@dataclass(frozen=True)
class Schedule:
    """What one L∞ iterative attack does at one budget."""

    eps_step: float
    steps: int
    random_starts: int
    decay: float | None = None


class LinfIterativeAttack(Attack):
    """Base of BIM, PGD and MI-FGSM: subclasses say how many steps of which size (:meth:`schedule`)."""

    @abstractmethod
    def schedule(self, budget: float) -> Schedule:
        """Step size, steps, random starts and momentum for budget ε."""

    def generate(
        self, estimator: Any, x: torch.Tensor, y: torch.Tensor, budget: float, *, seed: int
    ) -> torch.Tensor:
        if budget == 0:
            return x.detach().clone()
        schedule = self.schedule(budget)
        if schedule.random_starts > 1 and not isinstance(estimator, ClassifierMixin):
            raise ValueError(
                "random restarts (num_random_init > 1) keep the start that changes the prediction, "
                "which only classification has; use num_random_init=1 for segmentation"
            )
        seed_everything(seed)
        x0, labels = x.detach(), art_labels(estimator, y)

        def gradient(z: torch.Tensor) -> torch.Tensor:
            return input_gradient(estimator, z, labels)

        def attack_once(start: torch.Tensor) -> torch.Tensor:
            return linf_iterations(
                gradient,
                x0,
                start,
                eps=budget,
                eps_step=schedule.eps_step,
                steps=schedule.steps,
                decay=schedule.decay,
            )

        if schedule.random_starts == 0:
            return attack_once(x0)
        best = attack_once(art_random_start(x0, budget))
        for _ in range(schedule.random_starts - 1):
            candidate = attack_once(art_random_start(x0, budget))
            # as ART: a later restart replaces the result where it changes the prediction
            success = changed_decisions(estimator, x0, candidate, y)
            best[success] = candidate[success]
        return best
