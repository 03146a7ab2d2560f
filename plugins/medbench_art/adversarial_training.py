"""Defense ``at-pgd``: Madry et al.'s PGD adversarial training."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medbench.api import DefendedModel, Defense, DefenseContext
from medbench_art.pgd_torch import pgd_linf


@dataclass(frozen=True)
class PGDTrainingSettings:
    """Settings of PGD adversarial training.

    Attributes:
        eps: Training budget on the [0, 1] scale (8/255).
        max_iter: PGD steps per training batch (7, as in Madry et al.'s CIFAR setting).
        step_ratio: Step size as a fraction of ε (0.25).
        random_start: Start each PGD from a uniform random point of the ε-ball.
    """

    eps: float = 8 / 255
    max_iter: int = 7
    step_ratio: float = 0.25
    random_start: bool = True

    def validate(self) -> None:
        if not 0 <= self.eps <= 1:
            raise ValueError("eps must be in [0, 1]")
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if not 0 < self.step_ratio <= 1:
            raise ValueError("step_ratio must be in (0, 1]")


class PGDAdversarialTraining(Defense):
    """Trains on PGD examples only (min-max objective), crafted with the model in eval mode."""

    name = "at-pgd"
    description = "Madry PGD adversarial training (L∞, ε=8/255, 7 steps, random start)"
    kind = "training"
    Settings = PGDTrainingSettings

    def build(self, ctx: DefenseContext) -> DefendedModel:
        return ctx.new_model()

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        settings: PGDTrainingSettings = self.settings
        generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)

        def perturb(model: DefendedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return pgd_linf(
                lambda z: ctx.logits(model, z),
                x,
                y,
                eps=settings.eps,
                eps_step=settings.step_ratio * settings.eps,
                steps=settings.max_iter,
                random_start=settings.random_start,
                generator=generator,
            )

        ctx.train(defended, perturb=perturb)
