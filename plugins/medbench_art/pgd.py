"""PGD (Madry et al., 2018) through ART's ``ProjectedGradientDescent`` (PyTorch path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification.classifier import ClassifierMixin

from medbench.api import ALL_TASKS
from medbench_art._art_bridge import ARTEvasionAttack
from medbench_art._iterative import IterativeSettings
from medbench_art.random_start_pgd import RandomStartPGD


@dataclass(frozen=True)
class PGDSettings(IterativeSettings):
    """PGD settings.

    Attributes:
        max_iter: Gradient steps (10).
        step_ratio: Step size as a fraction of ε (0.25, i.e. 2.5·ε/10 as in Madry et al.).
        num_random_init: Random starts in the ε-ball; with more than one, ART keeps the
            successful restart per sample (classification only: segmentation takes one).
    """

    step_ratio: float = 0.25
    num_random_init: int = 1

    def validate(self) -> None:
        super().validate()
        if self.num_random_init < 1:
            raise ValueError("num_random_init must be >= 1 (PGD starts at a random point)")


class PGD(ARTEvasionAttack):
    """L∞ PGD with a uniform random start in the ε-ball: 10 steps of 0.25·ε by default."""

    name = "pgd"
    description = "Projected Gradient Descent, L∞, random start, 10 steps of ε/4 (ART, PyTorch path)"
    threat_model = "linf"
    tasks = ALL_TASKS
    budget_name = "eps"
    default_budgets = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    Settings = PGDSettings

    def make(self, estimator: Any, budget: float, batch_size: int) -> Any:
        settings: PGDSettings = self.settings
        # ART's segmentation (non-classifier) path refuses a random start: ours adds it
        factory = ProjectedGradientDescent if isinstance(estimator, ClassifierMixin) else RandomStartPGD
        return factory(
            estimator,
            norm=float("inf"),
            eps=budget,
            eps_step=settings.step(budget),
            max_iter=settings.max_iter,
            num_random_init=settings.num_random_init,
            batch_size=batch_size,
            verbose=False,
        )
