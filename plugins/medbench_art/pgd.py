"""PGD (Madry et al., 2018): ART's ``ProjectedGradientDescent`` steps, taken in torch."""

from __future__ import annotations

from dataclasses import dataclass

from medbench.api import ALL_TASKS
from medbench_art._iterative import IterativeSettings
from medbench_art.linf_iterative import LinfIterativeAttack, Schedule


@dataclass(frozen=True)
class PGDSettings(IterativeSettings):
    """PGD settings.

    Attributes:
        max_iter: Gradient steps (10).
        step_ratio: Step size as a fraction of ε (0.25, i.e. 2.5·ε/10 as in Madry et al.).
        num_random_init: Random starts in the ε-ball; with more than one, a later start replaces
            the result for the samples whose prediction it changes, as ART does (classification
            only: segmentation takes one).
    """

    step_ratio: float = 0.25
    num_random_init: int = 1

    def validate(self) -> None:
        super().validate()
        if self.num_random_init < 1:
            raise ValueError("num_random_init must be >= 1 (PGD starts at a random point)")


class PGD(LinfIterativeAttack):
    """L∞ PGD with a uniform random start in the ε-ball: 10 steps of 0.25·ε by default."""

    name = "pgd"
    description = "Projected Gradient Descent, L∞, random start, 10 steps of ε/4 (ART's steps, in torch)"
    threat_model = "linf"
    tasks = ALL_TASKS
    budget_name = "eps"
    default_budgets = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    Settings = PGDSettings

    def schedule(self, budget: float) -> Schedule:
        settings: PGDSettings = self.settings
        return Schedule(settings.step(budget), settings.max_iter, random_starts=settings.num_random_init)
