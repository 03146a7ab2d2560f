"""Shared settings of the iterative L∞ attacks (BIM, PGD, MI-FGSM)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IterativeSettings:
    """Iterations and step size of an iterative L∞ attack.

    Attributes:
        max_iter: Number of gradient steps (10, as in the papers medbench follows).
        step_ratio: Step size as a fraction of ε (``eps_step = step_ratio · ε``).
    """

    max_iter: int = 10
    step_ratio: float = 0.1

    def validate(self) -> None:
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if not 0 < self.step_ratio <= 1:
            raise ValueError("step_ratio must be in (0, 1]")
