"""Defense ``at-fgsm``: adversarial training on FGSM examples (Goodfellow et al., 2015)."""

from __future__ import annotations

from dataclasses import dataclass

from medbench_art._adversarial_training import LinfAdversarialTraining, check_linf_settings


class FGSMAdversarialTraining(LinfAdversarialTraining):
    """Trains on single-step FGSM examples only.

    With ``random_start`` and ``step_ratio=1.25`` it becomes Wong et al.'s "fast"
    adversarial training (FGSM from a random point of the ball, then projected); the
    default is plain FGSM, one step of size ε from the clean input.
    """

    name = "at-fgsm"
    description = "FGSM adversarial training (L∞, ε=8/255, one step of ε)"

    @dataclass(frozen=True)
    class Settings:
        """Settings of FGSM adversarial training.

        Attributes:
            eps: Training budget on the [0, 1] scale (8/255).
            step_ratio: Step size as a fraction of ε (1; Wong et al. use 1.25 with a random start).
            random_start: Start from a uniform random point of the ε-ball.
        """

        eps: float = 8 / 255
        step_ratio: float = 1.0
        random_start: bool = False

        def validate(self) -> None:
            check_linf_settings(self.eps, 1, min(self.step_ratio, 1.0))
            if self.step_ratio > 2:
                raise ValueError("step_ratio must be in (0, 2]")

    def linf_steps(self) -> tuple[int, bool]:
        return 1, self.settings.random_start
