"""Defense ``at-bim``: adversarial training on BIM (iterative FGSM) examples."""

from __future__ import annotations

from dataclasses import dataclass

from medbench_art._adversarial_training import LinfAdversarialTraining, check_linf_settings


class BIMAdversarialTraining(LinfAdversarialTraining):
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

    def linf_steps(self) -> tuple[int, bool]:
        return self.settings.max_iter, False
