"""Shared settings of the iterative L∞ attacks (BIM, PGD, MI-FGSM)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IterativeSettings:
    """Iterations and step size of an iterative L∞ attack.

    Attributes:
        max_iter: Number of gradient steps (10, as in the papers medbench follows).
        step_ratio: Step size as a fraction of ε (``eps_step = step_ratio · ε``).
        eps_step: An absolute step size on the [0, 1] scale that replaces ``step_ratio``
            (None: use the ratio). Paper 003's reference baselines use 0.01 whatever ε is.
    """

    max_iter: int = 10
    step_ratio: float = 0.1
    eps_step: float | None = None

    def validate(self) -> None:
        if self.max_iter < 1:
            raise ValueError("max_iter must be >= 1")
        if not 0 < self.step_ratio <= 1:
            raise ValueError("step_ratio must be in (0, 1]")
        if self.eps_step is not None and not 0 < self.eps_step <= 1:
            raise ValueError("eps_step must be in (0, 1]")

    def step(self, budget: float) -> float:
        """The step size for budget ε."""
        return self.eps_step if self.eps_step is not None else self.step_ratio * budget
