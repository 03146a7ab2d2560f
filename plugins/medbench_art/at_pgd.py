"""Defense ``at-pgd``: Madry et al.'s PGD adversarial training."""

from __future__ import annotations

from dataclasses import dataclass

from medbench_art._adversarial_training import LinfAdversarialTraining, check_linf_settings


class PGDAdversarialTraining(LinfAdversarialTraining):
    """Trains on PGD examples only (random start, ``max_iter`` steps of ``step_ratio``·ε)."""

    name = "at-pgd"
    description = "Madry PGD adversarial training (L∞, ε=8/255, 7 steps of ε/4, random start)"

    @dataclass(frozen=True)
    class Settings:
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
            check_linf_settings(self.eps, self.max_iter, self.step_ratio)

    def linf_steps(self) -> tuple[int, bool]:
        return self.settings.max_iter, self.settings.random_start
