"""What the adversarial-training defenses share: train on perturbed batches only.

Every ``at-*`` defense trains the matrix's model from scratch with the run's training
settings (epochs, batch size, learning rate) on perturbed batches **only** (the min-max
objective of Madry et al.; also what paper 003's adversarial training does), the
perturbation crafted with the model in eval mode at every batch. This gives the 2D
counterparts of paper 003's rows M^PGD, M^FGSM, M^BIM and M^GN.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch
from torch.nn.functional import cross_entropy

from medbench.api import ALL_TASKS, DefendedModel, Defense, DefenseContext
from medbench.api.toolkit import Criterion, default_loss, pgd_linf

Logits = Callable[[torch.Tensor], torch.Tensor]


def check_linf_settings(eps: float, max_iter: int, step_ratio: float) -> None:
    """Shared validation of an L∞ training attack's settings."""
    if not 0 <= eps <= 1:
        raise ValueError("eps must be in [0, 1]")
    if max_iter < 1:
        raise ValueError("max_iter must be >= 1")
    if not 0 < step_ratio <= 1:
        raise ValueError("step_ratio must be in (0, 1]")


class AdversarialTraining(Defense):
    """Base of the ``at-*`` defenses: subclasses say how a training batch is perturbed."""

    kind = "training"
    tasks = ALL_TASKS

    def build(self, ctx: DefenseContext) -> DefendedModel:
        return ctx.new_model()

    @abstractmethod
    def perturb(
        self,
        logits: Logits,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        loss: Criterion = cross_entropy,
    ) -> torch.Tensor:
        """The training input for a clean batch ``x`` (in [0, 1]), without parameter gradients.

        ``loss`` is the task's training loss (cross-entropy, BCE for multi-label data, Dice+CE
        for segmentation), which gradient-based perturbations ascend."""

    def fit(self, defended: DefendedModel, ctx: DefenseContext) -> None:
        generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        criterion = default_loss(ctx.dataset)

        def perturb(model: DefendedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.perturb(lambda z: ctx.logits(model, z), x, y, generator, criterion)

        ctx.train(defended, perturb=perturb)


class LinfAdversarialTraining(AdversarialTraining):
    """An ``at-*`` defense whose batches are L∞ steps of ``step_ratio``·ε (FGSM, BIM, PGD).

    Its settings have ``eps`` and ``step_ratio``; :meth:`linf_steps` says the rest.
    """

    @abstractmethod
    def linf_steps(self) -> tuple[int, bool]:
        """How many steps the training attack takes, and whether it starts at a random point."""

    def perturb(
        self,
        logits: Logits,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        loss: Criterion = cross_entropy,
    ) -> torch.Tensor:
        steps, random_start = self.linf_steps()
        return pgd_linf(
            logits,
            x,
            y,
            eps=self.settings.eps,
            eps_step=self.settings.step_ratio * self.settings.eps,
            steps=steps,
            random_start=random_start,
            generator=generator,
            loss=loss,
        )
