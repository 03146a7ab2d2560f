"""Defense ``at-bim``: adversarial training on BIM (iterative FGSM) examples."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.functional import cross_entropy

from medbench_art._adversarial_training import AdversarialTraining, Logits, check_linf_settings
from medbench_art.pgd_torch import Criterion, pgd_linf


class BIMAdversarialTraining(AdversarialTraining):
    """Trains on BIM examples only: PGD without random start (ART's definition of BIM)."""

    name = "at-bim"
    description = "BIM adversarial training (L∞, ε=8/255, 7 steps of ε/4, no random start)"

    @dataclass(frozen=True)
    class Settings:
        """Settings of BIM adversarial training.

        Attributes:
            eps: Training budget on the [0, 1] scale (8/255).
            max_iter: Iterations per training batch (7, the training cost of ``at-pgd``).
            step_ratio: Step size as a fraction of ε (0.25, so the steps can reach ε).
        """

        eps: float = 8 / 255
        max_iter: int = 7
        step_ratio: float = 0.25

        def validate(self) -> None:
            check_linf_settings(self.eps, self.max_iter, self.step_ratio)

    def perturb(
        self,
        logits: Logits,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        loss: Criterion = cross_entropy,
    ) -> torch.Tensor:
        s = self.settings
        return pgd_linf(
            logits,
            x,
            y,
            eps=s.eps,
            eps_step=s.step_ratio * s.eps,
            steps=s.max_iter,
            random_start=False,
            loss=loss,
        )
